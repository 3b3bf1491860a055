//! Keyed signatures as cosign and containers/image write them (the first piece of the sidecar
//! marketplace issue): a *simple signing* payload that names the manifest digest, signed with
//! ECDSA P-256 over SHA-256, stored under the tag `sha256-<hex>.sig`, verified offline against a
//! public key (no Fulcio, no Rekor).
//!
//! A signature verifies for exactly the manifest digest that was resolved and will be pulled,
//! and for a `docker-reference` the trust policy's `signedIdentity` accepts (trust.rs decides
//! which; by default the reference the user asked for, so a mirror, which keeps that name, still
//! verifies). The payload is parsed as strictly as containers/image parses it.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};

use super::store::Digest;

/// The `critical.type` of a cosign signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The media type of the signature layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not a P-256 private key wpod can read: {0} (wpod reads cosign's encrypted keys, PKCS#8 and SEC1 PEM)")]
    PrivateKey(String),
    #[error(
        "the password does not open this private key (set WPOD_KEY_PASSWORD or COSIGN_PASSWORD)"
    )]
    Password,
    #[error("not a P-256 public key in PEM ({0})")]
    PublicKey(String),
    #[error("the signature does not verify with this key")]
    BadSignature,
    #[error("the signature payload is not a cosign simple-signing payload ({0})")]
    Payload(String),
    #[error("the signature is for {signed}, not for {wanted}: it signs another image")]
    OtherDigest { signed: String, wanted: String },
    /// The payload's `docker-reference`, which the policy's `signedIdentity` does not accept.
    #[error(
        "the signature is for the identity \"{signed}\", which the trust policy does not accept"
    )]
    Identity { signed: String },
}

/// PEM labels of cosign's password-encrypted private keys (the newer label first).
const ENCRYPTED_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// A new key pair: (private key PEM, public key PEM), as `wpod key generate` writes them. The
/// private key is in cosign's encrypted format (scrypt + NaCl secretbox over PKCS#8), so cosign
/// and skopeo (`--sign-by-sigstore-private-key`) sign with it too; the public key is the SPKI
/// PEM that cosign and policy.json's `keyPath` read.
pub fn generate_key(password: &[u8]) -> Result<(String, String), SignatureError> {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let der = key
        .to_pkcs8_der()
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))?;
    let private = encrypt_key(der.as_bytes(), password)?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignatureError::PublicKey(e.to_string()))?;
    Ok((private, public))
}

/// The JSON inside cosign's encrypted key PEM (go-securesystemslib's `encrypted` format; Go
/// writes byte strings as base64).
#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: CipherParams,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    name: String,
    nonce: String,
}

fn secretbox_key(
    password: &[u8],
    salt: &[u8],
    p: &ScryptParams,
) -> Result<[u8; 32], SignatureError> {
    let bad = |what: &str| SignatureError::PrivateKey(format!("bad scrypt parameters: {what}"));
    if !p.n.is_power_of_two() || p.n < 2 || p.n > 1 << 20 {
        return Err(bad("N"));
    }
    let params =
        scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p, 32).map_err(|_| bad("r or p"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|_| bad("length"))?;
    Ok(key)
}

fn encrypt_key(pkcs8: &[u8], password: &[u8]) -> Result<String, SignatureError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    // go-securesystemslib's legacy (default) cost: N = 2^15, r = 8, p = 1.
    let params = ScryptParams {
        n: 1 << 15,
        r: 8,
        p: 1,
    };
    let key = secretbox_key(password, &salt, &params)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let sealed = cipher
        .encrypt(&nonce.into(), pkcs8)
        .map_err(|_| SignatureError::PrivateKey("cannot encrypt the key".into()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let json = serde_json::to_vec(&EncryptedKey {
        kdf: Kdf {
            name: "scrypt".into(),
            params,
            salt: b64(&salt),
        },
        cipher: CipherParams {
            name: "nacl/secretbox".into(),
            nonce: b64(&nonce),
        },
        ciphertext: b64(&sealed),
    })
    .unwrap_or_default();
    p256::pkcs8::der::pem::encode_string(ENCRYPTED_LABELS[0], LineEnding::LF, &json)
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))
}

fn decrypt_key(json: &[u8], password: &[u8]) -> Result<SigningKey, SignatureError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let bad = |what: String| SignatureError::PrivateKey(what);
    let e: EncryptedKey = serde_json::from_slice(json)
        .map_err(|e| bad(format!("not cosign's encrypted key format: {e}")))?;
    if e.kdf.name != "scrypt" || e.cipher.name != "nacl/secretbox" {
        return Err(bad(format!(
            "encrypted with {} and {}; wpod reads scrypt and nacl/secretbox",
            e.kdf.name, e.cipher.name
        )));
    }
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| bad("bad base64 in the encrypted key".into()))
    };
    let salt = b64(&e.kdf.salt)?;
    let nonce: [u8; 24] = b64(&e.cipher.nonce)?
        .try_into()
        .map_err(|_| bad("the nonce is not 24 bytes".into()))?;
    let key = secretbox_key(password, &salt, &e.kdf.params)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let pkcs8 = cipher
        .decrypt(&nonce.into(), b64(&e.ciphertext)?.as_slice())
        .map_err(|_| SignatureError::Password)?;
    SigningKey::from_pkcs8_der(&pkcs8).map_err(|e| bad(e.to_string()))
}

/// A private key from PEM: cosign's encrypted format (with `password`), PKCS#8 or SEC1.
fn signing_key(pem: &str, password: &[u8]) -> Result<SigningKey, SignatureError> {
    let (label, der) = p256::pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| SignatureError::PrivateKey(format!("not a PEM file ({e})")))?;
    match label {
        l if ENCRYPTED_LABELS.contains(&l) => decrypt_key(&der, password),
        "PRIVATE KEY" => {
            SigningKey::from_pkcs8_der(&der).map_err(|e| SignatureError::PrivateKey(e.to_string()))
        }
        "EC PRIVATE KEY" => {
            use p256::elliptic_curve::SecretKey;
            SecretKey::<p256::NistP256>::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(|e| SignatureError::PrivateKey(e.to_string()))
        }
        other => Err(SignatureError::PrivateKey(format!(
            "a PEM \"{other}\", not a private key"
        ))),
    }
}

// Every struct refuses unknown keys, and every key is required, as containers/image's
// `ParanoidUnmarshalJSONObjectExactFields` requires: a payload wpod accepts means the same to
// podman. `optional` must be present; `null` is what cosign writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    critical: Critical,
    optional: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: ImageId,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageId {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The simple-signing payload for the manifest `digest` of `reference`: a fully specified
/// reference (`repo:tag` or `repo@digest`, see `ImageName::signed_reference`), which the
/// default `signedIdentity` requires.
pub fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: reference.to_string(),
            },
            image: ImageId {
                docker_manifest_digest: digest.to_string(),
            },
            kind: PAYLOAD_TYPE.to_string(),
        },
        optional: serde_json::Value::Null,
    };
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Checks that `pem` is a P-256 public key wpod can verify with.
pub fn check_public_key(pem: &str) -> Result<(), SignatureError> {
    VerifyingKey::from_public_key_pem(pem)
        .map(|_| ())
        .map_err(|e| SignatureError::PublicKey(e.to_string()))
}

/// Signs `payload` with the PEM private key (`password` opens an encrypted one): the base64
/// DER signature cosign stores.
pub fn sign(private_pem: &str, password: &[u8], payload: &[u8]) -> Result<String, SignatureError> {
    let key = signing_key(private_pem, password)?;
    let sig: DerSignature = key.sign(payload);
    Ok(base64::engine::general_purpose::STANDARD.encode(sig.as_bytes()))
}

/// Checks that `signature` (base64, DER or fixed-size) over `payload` verifies with the PEM
/// public key, that the payload signs exactly the manifest `wanted`, and that `accept` (the
/// policy's `signedIdentity`) accepts its `docker-reference`. In containers/image's order:
/// crypto, strict parse, type, digest, identity.
pub fn verify(
    public_pem: &str,
    payload: &[u8],
    signature: &str,
    wanted: &Digest,
    accept: &dyn Fn(&str) -> bool,
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_public_key_pem(public_pem)
        .map_err(|e| SignatureError::PublicKey(e.to_string()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::BadSignature)?;
    let sig = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|_| SignatureError::BadSignature)?;
    key.verify(payload, &sig)
        .map_err(|_| SignatureError::BadSignature)?;
    let p: Payload =
        serde_json::from_slice(payload).map_err(|e| SignatureError::Payload(e.to_string()))?;
    if p.critical.kind != PAYLOAD_TYPE {
        return Err(SignatureError::Payload(format!(
            "unrecognized signature type {:?}",
            p.critical.kind
        )));
    }
    match &p.optional {
        serde_json::Value::Null => {}
        // Other keys are free-form annotations; these two have types containers/image checks.
        serde_json::Value::Object(o) => {
            if o.get("creator").is_some_and(|c| !c.is_string()) {
                return Err(SignatureError::Payload(
                    "optional.creator is not a string".into(),
                ));
            }
            if o.get("timestamp")
                .is_some_and(|t| t.as_f64().is_none_or(|f| f.fract() != 0.0))
            {
                return Err(SignatureError::Payload(
                    "optional.timestamp is not an integer".into(),
                ));
            }
        }
        _ => {
            return Err(SignatureError::Payload(
                "optional is neither an object nor null".into(),
            ))
        }
    }
    if p.critical.image.docker_manifest_digest != wanted.as_str() {
        return Err(SignatureError::OtherDigest {
            signed: p.critical.image.docker_manifest_digest,
            wanted: wanted.to_string(),
        });
    }
    if !accept(&p.critical.identity.docker_reference) {
        return Err(SignatureError::Identity {
            signed: p.critical.identity.docker_reference,
        });
    }
    Ok(())
}

/// The tag cosign stores a manifest's signatures under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> Digest {
        Digest::of(b)
    }

    /// A `signedIdentity` that accepts any reference: these tests are about the rest.
    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn a_signature_verifies_for_its_key_and_its_digest_only() {
        let (private, public) = generate_key(b"pw").unwrap();
        let (_, other_public) = generate_key(b"").unwrap();
        let d = digest(b"manifest");
        let p = payload("127.0.0.1:5000/sidecars/probe", &d);
        let sig = sign(&private, b"pw", &p).unwrap();
        verify(&public, &p, &sig, &d, &any).unwrap();
        assert!(matches!(
            sign(&private, b"wrong", &p),
            Err(SignatureError::Password)
        ));
        assert!(matches!(
            verify(&other_public, &p, &sig, &d, &any),
            Err(SignatureError::BadSignature)
        ));
        assert!(matches!(
            verify(&public, &p, &sig, &digest(b"another manifest"), &any),
            Err(SignatureError::OtherDigest { .. })
        ));
        let mut tampered = p.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(verify(&public, &tampered, &sig, &d, &any).is_err());
    }

    #[test]
    fn the_payload_is_cosigns_simple_signing_format() {
        let d = digest(b"m");
        let p: serde_json::Value = serde_json::from_slice(&payload("r/x", &d)).unwrap();
        assert_eq!(p["critical"]["type"], PAYLOAD_TYPE);
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], d.as_str());
        assert_eq!(p["critical"]["identity"]["docker-reference"], "r/x");
        assert!(p["optional"].is_null());
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
    }

    #[test]
    fn the_reference_is_what_the_identity_predicate_accepts_after_the_digest() {
        let (private, public) = generate_key(b"").unwrap();
        let d = digest(b"manifest");
        let p = payload("docker.io/team/sidecar:1.0", &d);
        let sig = sign(&private, b"", &p).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let only_1_0 = |r: &str| {
            seen.borrow_mut().push(r.to_string());
            r == "docker.io/team/sidecar:1.0"
        };
        verify(&public, &p, &sig, &d, &only_1_0).unwrap();
        assert_eq!(*seen.borrow(), ["docker.io/team/sidecar:1.0"]);
        let e = verify(&public, &p, &sig, &d, &|r: &str| r.ends_with(":2.0")).unwrap_err();
        assert!(
            matches!(&e, SignatureError::Identity { signed } if signed == "docker.io/team/sidecar:1.0"),
            "{e}"
        );
        // The digest is checked first: another digest is reported as such, whatever the name.
        assert!(matches!(
            verify(&public, &p, &sig, &digest(b"other"), &|_: &str| false),
            Err(SignatureError::OtherDigest { .. })
        ));
    }

    #[test]
    fn the_payload_is_parsed_as_strictly_as_containers_image_parses_it() {
        let (private, public) = generate_key(b"").unwrap();
        let d = digest(b"manifest");
        let check = |json: serde_json::Value| {
            let p = serde_json::to_vec(&json).unwrap();
            verify(&public, &p, &sign(&private, b"", &p).unwrap(), &d, &any)
        };
        let good = || {
            serde_json::json!({
                "critical": {
                    "identity": {"docker-reference": "reg.example/x:1"},
                    "image": {"docker-manifest-digest": d.as_str()},
                    "type": PAYLOAD_TYPE,
                },
                "optional": null,
            })
        };
        check(good()).unwrap();
        let mut with_notes = good();
        with_notes["optional"] =
            serde_json::json!({"creator": "cosign", "timestamp": 1700000000, "any": [1]});
        check(with_notes).unwrap();
        let refused = |edit: &dyn Fn(&mut serde_json::Value), why: &str| {
            let mut v = good();
            edit(&mut v);
            match check(v) {
                Err(SignatureError::Payload(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        };
        refused(
            &|v| {
                v.as_object_mut().unwrap().remove("optional");
            },
            "missing field `optional`",
        );
        refused(&|v| v["extra"] = 1.into(), "unknown field `extra`");
        refused(
            &|v| v["critical"]["extra"] = 1.into(),
            "unknown field `extra`",
        );
        refused(
            &|v| v["critical"]["identity"]["extra"] = 1.into(),
            "unknown field `extra`",
        );
        refused(
            &|v| v["critical"]["image"]["extra"] = 1.into(),
            "unknown field `extra`",
        );
        refused(
            &|v| {
                v["critical"].as_object_mut().unwrap().remove("identity");
            },
            "missing field `identity`",
        );
        refused(
            &|v| v["critical"]["type"] = "atomic container signature".into(),
            "unrecognized signature type",
        );
        refused(
            &|v| v["optional"] = serde_json::json!({"timestamp": 1.5}),
            "timestamp is not an integer",
        );
        refused(
            &|v| v["optional"] = serde_json::json!({"creator": 1}),
            "creator is not a string",
        );
        refused(&|v| v["optional"] = 1.into(), "neither an object nor null");
    }

    #[test]
    fn plain_pkcs8_keys_sign_too() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let d = digest(b"m");
        let p = payload("r/x", &d);
        verify(&public, &p, &sign(&pem, b"", &p).unwrap(), &d, &any).unwrap();
        assert!(sign(&public, b"", &p).is_err(), "a public key cannot sign");
    }
}
