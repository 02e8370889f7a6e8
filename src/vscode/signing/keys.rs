//! Publishers' public keys: SubjectPublicKeyInfo (SPKI), as PEM `PUBLIC KEY` blocks or DER,
//! the form `openssl pkey -pubout` writes. Three kinds are accepted, the ones ring verifies:
//! RSA of 2048 to 4096 bits, ECDSA on P-256, and Ed25519.

use std::fmt;

use der::asn1::UintRef;
use der::{Decode, Reader};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::Algorithm;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Smaller RSA keys are no longer safe; larger ones cost verification time for no gain that
/// publishers need, and the verifier stopped at 4096 too.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// What a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "rsa-{bits}"),
            KeyKind::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyKind::Ed25519 => f.write_str("ed25519"),
        }
    }
}

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("it is neither a PEM PUBLIC KEY nor a DER SubjectPublicKeyInfo")]
    NotAKey,
    #[error("it holds a {0}, not a public key (export one with `openssl pkey -in KEY -pubout`)")]
    NotPublic(String),
    #[error("its PEM is malformed: {0}")]
    Pem(String),
    #[error("its public key is malformed: {0}")]
    Malformed(String),
    #[error("its algorithm ({0}) is not supported: use RSA (2048 to 4096 bits), ECDSA P-256 or Ed25519")]
    Unsupported(String),
    #[error("its RSA key has {0} bits: 2048 to 4096 are accepted")]
    RsaSize(usize),
}

/// A publisher's public key, checked to be one of the accepted kinds.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// The whole SPKI, DER: what is stored and what the fingerprint is of.
    spki: Vec<u8>,
    /// The part ring takes: RSAPublicKey (DER), the uncompressed P-256 point, or the 32 bytes
    /// of an Ed25519 key.
    key: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.kind, self.fingerprint())
    }
}

impl PublicKey {
    /// Every key of a key file: one or more PEM `PUBLIC KEY` blocks, or one DER SPKI.
    pub fn parse_file(bytes: &[u8]) -> Result<Vec<PublicKey>, KeyError> {
        let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
        if !text.is_some_and(|t| t.starts_with("-----BEGIN")) {
            return PublicKey::from_spki_der(bytes).map(|k| vec![k]).map_err(|e| match e {
                // Binary that is not even DER: say what we expected rather than how it failed.
                KeyError::Malformed(_) if bytes.first() != Some(&0x30) => KeyError::NotAKey,
                e => e,
            });
        }
        let blocks = pem::parse_many(bytes).map_err(|e| KeyError::Pem(e.to_string()))?;
        if blocks.is_empty() {
            return Err(KeyError::NotAKey);
        }
        blocks
            .iter()
            .map(|b| match b.tag() {
                "PUBLIC KEY" => PublicKey::from_spki_der(b.contents()),
                other => Err(KeyError::NotPublic(other.to_lowercase())),
            })
            .collect()
    }

    /// A key from its DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let malformed = |e: &dyn std::fmt::Display| KeyError::Malformed(e.to_string());
        let info = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| malformed(&e))?;
        let key = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::Malformed("the key's bit string is not whole bytes".into()))?;
        let kind = match info.algorithm.oid {
            RSA_ENCRYPTION => {
                if info.algorithm.parameters.is_some_and(|p| !p.is_null()) {
                    return Err(KeyError::Malformed("RSA parameters must be NULL".into()));
                }
                let bits = rsa_modulus_bits(key).map_err(|e| malformed(&e))?;
                if !RSA_BITS.contains(&bits) {
                    return Err(KeyError::RsaSize(bits));
                }
                KeyKind::Rsa { bits }
            }
            EC_PUBLIC_KEY => match info.algorithm.parameters_oid() {
                Ok(P256) if key.len() == 65 && key[0] == 4 => KeyKind::EcdsaP256,
                Ok(P256) => {
                    return Err(KeyError::Unsupported("a P-256 point that is not in uncompressed form".into()));
                }
                Ok(curve) => return Err(KeyError::Unsupported(format!("ECDSA on curve {curve}"))),
                Err(e) => return Err(malformed(&e)),
            },
            ED25519 if info.algorithm.parameters.is_none() && key.len() == 32 => KeyKind::Ed25519,
            ED25519 => return Err(KeyError::Malformed("an Ed25519 key is 32 bytes without parameters".into())),
            other => return Err(KeyError::Unsupported(format!("OID {other}"))),
        };
        Ok(PublicKey { kind, spki: der.to_vec(), key: key.to_vec() })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// `sha256:` and the hex SHA-256 of the DER SPKI, as
    /// `openssl pkey -pubin -in KEY -outform DER | sha256sum` prints it.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", crate::util::hex(&crate::util::sha256(&self.spki)))
    }

    /// The key as one PEM `PUBLIC KEY` block.
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.spki.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Whether this key made `signature` over `message` with `algorithm`. An algorithm of
    /// another kind of key never verifies.
    pub fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let ring_alg: &'static dyn VerificationAlgorithm = match (self.kind, algorithm) {
            (KeyKind::Rsa { .. }, Algorithm::RsaPkcs1Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa { .. }, Algorithm::RsaPssSha256) => &signature::RSA_PSS_2048_8192_SHA256,
            (KeyKind::EcdsaP256, Algorithm::EcdsaP256Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyKind::Ed25519, Algorithm::Ed25519) => &signature::ED25519,
            _ => return false,
        };
        UnparsedPublicKey::new(ring_alg, &self.key).verify(message, signature).is_ok()
    }

    /// Whether `algorithm` is one this key can have made.
    pub fn fits(&self, algorithm: Algorithm) -> bool {
        matches!(
            (self.kind, algorithm),
            (KeyKind::Rsa { .. }, Algorithm::RsaPkcs1Sha256 | Algorithm::RsaPssSha256)
                | (KeyKind::EcdsaP256, Algorithm::EcdsaP256Sha256)
                | (KeyKind::Ed25519, Algorithm::Ed25519)
        )
    }
}

/// The size of an RSAPublicKey's modulus (`SEQUENCE { modulus INTEGER, publicExponent INTEGER }`).
fn rsa_modulus_bits(der: &[u8]) -> Result<usize, der::Error> {
    let mut reader = der::SliceReader::new(der)?;
    let modulus = reader.sequence(|r| {
        let n = UintRef::decode(r)?;
        let _e = UintRef::decode(r)?;
        Ok::<_, der::Error>(n)
    })?;
    reader.finish()?;
    // UintRef drops leading zero bytes, so only the first byte's own leading zeros remain.
    let bytes = modulus.as_bytes();
    Ok(match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    /// SPKI of a raw Ed25519 key: the fixed header of RFC 8410, then the key.
    pub fn ed25519_spki(raw: &[u8]) -> Vec<u8> {
        let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        der.extend_from_slice(raw);
        der
    }

    #[test]
    fn ed25519_round_trip_through_pem() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = PublicKey::from_spki_der(&ed25519_spki(pair.public_key().as_ref())).unwrap();
        assert_eq!(key.kind(), KeyKind::Ed25519);
        let again = PublicKey::parse_file(key.to_pem().as_bytes()).unwrap();
        assert_eq!(again, vec![key.clone()]);
        let sig = pair.sign(b"hello");
        assert!(key.verifies(Algorithm::Ed25519, b"hello", sig.as_ref()));
        assert!(!key.verifies(Algorithm::Ed25519, b"hellO", sig.as_ref()));
        assert!(!key.verifies(Algorithm::EcdsaP256Sha256, b"hello", sig.as_ref()), "kinds never mix");
    }

    #[test]
    fn p256_key_and_signature() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(pair.public_key().as_ref());
        let key = PublicKey::from_spki_der(&der).unwrap();
        assert_eq!(key.kind(), KeyKind::EcdsaP256);
        let sig = pair.sign(&rng, b"msg").unwrap();
        assert!(key.verifies(Algorithm::EcdsaP256Sha256, b"msg", sig.as_ref()));
        assert!(!key.verifies(Algorithm::EcdsaP256Sha256, b"other", sig.as_ref()));
    }

    #[test]
    fn what_is_refused() {
        assert_eq!(PublicKey::parse_file(b"hello"), Err(KeyError::NotAKey));
        assert_eq!(PublicKey::parse_file(&[0u8, 1, 2]), Err(KeyError::NotAKey));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(PublicKey::parse_file(private.as_bytes()), Err(KeyError::NotPublic("private key".into())));
        assert!(matches!(PublicKey::from_spki_der(&ed25519_spki(&[1; 31])), Err(KeyError::Malformed(_))));
        assert!(matches!(PublicKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01]), Err(KeyError::Malformed(_))));
    }

    /// DER of one TLV, its length in the shortest form (DER accepts no other).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = match body.len() {
            n if n < 0x80 => vec![tag, n as u8],
            n if n < 0x100 => vec![tag, 0x81, n as u8],
            n => vec![tag, 0x82, (n >> 8) as u8, n as u8],
        };
        out.extend(body);
        out
    }

    /// An RSA SPKI whose modulus has `bits` bits (not a real modulus: only its size matters).
    fn rsa_spki(bits: usize) -> Vec<u8> {
        let top: u8 = 1 << ((bits - 1) % 8);
        // A leading zero byte only where the top bit is set, as DER wants.
        let mut n = if top == 0x80 { vec![0x00, top] } else { vec![top] };
        n.extend(std::iter::repeat_n(0x11, (bits - 1) / 8));
        let mut body = tlv(0x02, &n);
        body.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let rsa_public_key = tlv(0x30, &body);
        let mut bit_string = vec![0x00];
        bit_string.extend(&rsa_public_key);
        let mut spki = vec![0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
        spki.extend(tlv(0x03, &bit_string));
        tlv(0x30, &spki)
    }

    #[test]
    fn rsa_sizes() {
        for bits in [2048, 3072, 4096] {
            assert_eq!(PublicKey::from_spki_der(&rsa_spki(bits)).unwrap().kind(), KeyKind::Rsa { bits });
        }
        for bits in [1024, 2047, 4097, 8192] {
            assert_eq!(PublicKey::from_spki_der(&rsa_spki(bits)), Err(KeyError::RsaSize(bits)));
        }
    }
}
