"""The application: the shell that runs the stages on the kernel.

The CLI, the daemon, the HTTP API and status page, metrics, explain, dead-letter operations and backups.
It opens the components (stacdrop.app.components) and hands them to the stages, which it reaches only
through what their packages export. Nothing below (the kernel in stacdrop/, the stages) imports it.
"""
