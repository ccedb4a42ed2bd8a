"""Everything Tars sends to a host as text: validation, the on-host layout, shell commands.

Pure code: nothing here opens a connection. Every value that reaches a shell goes through
``shlex.quote``; versions, addresses and paths are validated before any command is built.
"""
