"""Test images: Pillow-made PNG/JPEG, an XMP packet in a PNG iTXt chunk, and C2PA signing with a local CA."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from PIL import Image

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
KU = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
PROHIBITED = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"
ALLOWED = "http://ns.useplus.org/ldf/vocab/DMI-ALLOWED"


def image_bytes(fmt: str, colour: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    """A small solid-colour image in ``fmt`` (``PNG``, ``JPEG``, ``WEBP``)."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format=fmt)
    return out.getvalue()


def xmp_packet(data_mining: str) -> bytes:
    """An XMP packet carrying ``plus:DataMining`` as an rdf:resource, the form PLUS-aware tools write."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">'
        f'<plus:DataMining rdf:resource="{data_mining}"/>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def png_with_xmp(png: bytes, packet: bytes, *, compressed: bool = False) -> bytes:
    """Insert an iTXt ``XML:com.adobe.xmp`` chunk right after IHDR (by hand, so the test owns the bytes)."""
    text = zlib.compress(packet) if compressed else packet
    body = b"XML:com.adobe.xmp\x00" + bytes([int(compressed), 0]) + b"\x00\x00" + text
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


@dataclass(frozen=True)
class LocalCA:
    chain_pem: bytes
    key_pem: bytes
    ca_pem: str


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LoRAHub Test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _issue(
    subject: x509.Name,
    issuer: x509.Name,
    pub: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    exts: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for ext, critical in exts:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


@cache
def local_ca() -> LocalCA:
    """A root CA and an ES256 leaf with the profile c2pa-rs demands (docs/provenance.md, "Certificates and the trust
    model")."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = _issue(
        _name("Test Root CA"),
        _name("Test Root CA"),
        ca_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(**{f: f in ("key_cert_sign", "crl_sign") for f in KU}), True),
            (ca_ski, False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False),
        ],
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _issue(
        _name("test signer"),
        ca.subject,
        leaf_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(**{f: f == "digital_signature" for f in KU}), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), False),
            (x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    key = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return LocalCA(chain, key, ca.public_bytes(serialization.Encoding.PEM).decode())


def training_mining(label: str = "cawg.training-mining", use: str = "notAllowed") -> dict[str, Any]:
    prefix = label.split(".", maxsplit=1)[0]
    return {
        "label": label,
        "data": {
            "entries": {
                f"{prefix}.ai_generative_training": {"use": use},
                f"{prefix}.ai_inference": {"use": "allowed"},
            }
        },
    }


def c2pa_sign(data: bytes, mime: str, assertions: list[dict[str, Any]]) -> bytes:
    """Sign ``data`` with a manifest carrying ``assertions`` (no thumbnail, no TSA: fast and offline)."""
    import c2pa

    ca = local_ca()
    manifest = {
        "claim_generator_info": [{"name": "lorahub-tests", "version": "0"}],
        "title": "image",
        "format": mime,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
                        }
                    ]
                },
            },
            *assertions,
        ],
    }
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.key_pem, None))
    dst = io.BytesIO()
    with c2pa.Builder(manifest, context=context) as builder:
        builder.sign(signer, mime, io.BytesIO(data), dst)
    return dst.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
