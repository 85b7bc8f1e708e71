"""The CAs Rain trusts for a cloud's HTTPS: the system's, not the bundle requests ships.

requests verifies against certifi's bundle unless told otherwise, so a site CA
installed in the system store (/etc/ssl/certs) would be ignored; the stdlib
clients trusted the system store. Every cloud client passes system_cas() as
`verify` when the user names no CA bundle of their own.
"""

from __future__ import annotations

import os
import ssl


def system_cas() -> bool | str:
    """$REQUESTS_CA_BUNDLE or $SSL_CERT_FILE if set, else OpenSSL's default file or directory (True: none
    found, so requests' own bundle)."""
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var):
            return os.environ[var]
    paths = ssl.get_default_verify_paths()
    return next((p for p in (paths.cafile, paths.capath) if p and os.path.exists(p)), True)
