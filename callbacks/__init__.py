"""trainkit's callback library: ``keras.callbacks.Callback`` subclasses, one a module.

Each module's name is its entry, ``conf/callbacks/entry/<name>.yaml``; each class documents
the hooks it uses, its options and an example. Callbacks that need to know about the run (its
directory, config, class names) subclass :class:`callbacks.base.TrainkitCallback`; any plain Keras
callback works in a stack too.
"""
