"""kokpit operators: one package per operator; they talk to each other only through API objects."""
