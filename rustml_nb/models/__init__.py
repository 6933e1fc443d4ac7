"""The model families, one folder each: config, name-mapping rule table, variant detection, typed weight
structs, the compiled forward pass and the public classes. ``rustml_nb.registry`` maps config.json's
``model_type`` to the family that runs it."""
