"""The only socket code: listen/accept and dial, the framed socket, TLS, busy polling; the one place
OS errors become net errors.
"""
