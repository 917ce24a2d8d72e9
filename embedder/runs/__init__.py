"""The run on disk: the bundle's files, reading them back checked, folders the program owns, the machine."""
