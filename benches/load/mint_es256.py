#!/usr/bin/env python3
"""Makes a P-256 key pair with openssl and mints one ES256 JWT shaped like
Google IAP's, valid for an hour.

    mint_es256.py DIR   -> DIR/jwt-es256.pem (public key; its stem is the kid),
                           prints the token on stdout
"""
import base64
import json
import os
import subprocess
import sys
import time

ISSUER = "https://cloud.google.com/iap"
AUDIENCE = "/projects/123456789/global/backendServices/987654321"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(sig):
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) -> r || s, 32 bytes each."""
    assert sig[0] == 0x30
    i = 2 if sig[1] < 0x80 else 2 + (sig[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert sig[i] == 0x02
        n = sig[i + 1]
        v = sig[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + n
    return out


def main():
    d = sys.argv[1]
    key = os.path.join(d, "jwt-es256.key")
    pub = os.path.join(d, "jwt-es256.pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
                   check=True)
    subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", pub], check=True,
                   stderr=subprocess.DEVNULL)
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": "jwt-es256"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "accounts.google.com:112233445566778899001",
              "email": "dana@corp.example", "hd": "corp.example", "iat": now, "exp": now + 3600}
    signing_input = (b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64(json.dumps(claims, separators=(",", ":")).encode()))
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    print(signing_input + "." + b64(der_to_raw(der)))


if __name__ == "__main__":
    main()
