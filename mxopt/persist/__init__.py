"""Layer 4: objects by name and as files. Versioned registry names
(:mod:`~mxopt.persist.registry`), configs as dicts (:mod:`~mxopt.persist.config`) and as
text (:mod:`~mxopt.persist.files`), and the checksummed archive format of checkpoints
(:mod:`~mxopt.persist.archive`). Nothing here knows about updaters."""
