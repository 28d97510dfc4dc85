"""Infrastructure every layer uses: units, elements, errors, settings from dataclasses (config), atomic
writes, locks, worker processes, threads, the resume check, versions. Nothing here imports another part of
openmlff."""
