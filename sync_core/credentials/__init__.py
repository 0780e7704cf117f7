"""Credentials that never expire silently (SPEC §6): the three modes, Key Vault, expiry, watch,
rotation, and the credential's status for the status page and the doctor.

- :mod:`~sync_core.credentials.vault`: Key Vault reads and writes, and a certificate read from it;
- :mod:`~sync_core.credentials.sources`: the credential source each ``CREDENTIAL_MODE`` signs in
  with (:func:`~sync_core.credentials.sources.source_for`);
- :mod:`~sync_core.credentials.expiry`: when the credential expires, and how it stands now;
- :mod:`~sync_core.credentials.rotation`: a new client secret, proven before it is used;
- :mod:`~sync_core.credentials.status`: the credential as status and the doctor show it;
- :mod:`~sync_core.credentials.watch`: the daily ``credential_watch`` timer.

Secret values, tokens and signatures are never logged, put into an error or stored anywhere but
Key Vault.
"""
