"""Models: the study's registry, locally built stand-ins (``tiny``, ``shape:…``) and resolution."""
