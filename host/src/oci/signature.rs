//! Keyed signatures as cosign and containers/image write them (the first piece of the sidecar
//! marketplace issue): a *simple signing* payload that names the manifest digest, signed with
//! ECDSA P-256 over SHA-256, stored under the tag `sha256-<hex>.sig`, verified offline against a
//! public key (no Fulcio, no Rekor).
//!
//! What is trusted is the digest in the payload, never the reference in it (a mirror re-homes an
//! image but keeps its digest): a signature verifies for exactly the manifest digest that was
//! resolved and will be pulled.

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
    #[error("not a P-256 private key in PKCS#8 PEM ({0})")]
    PrivateKey(String),
    #[error("not a P-256 public key in PEM ({0})")]
    PublicKey(String),
    #[error("the signature does not verify with this key")]
    BadSignature,
    #[error("the signature payload is not a cosign simple-signing payload ({0})")]
    Payload(String),
    #[error("the signature is for {signed}, not for {wanted}: it signs another image")]
    OtherDigest { signed: String, wanted: String },
}

/// A new key pair: (private key PEM, public key PEM), as `wpod key generate` writes them.
pub fn generate_key() -> Result<(String, String), SignatureError> {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))?
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignatureError::PublicKey(e.to_string()))?;
    Ok((private, public))
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: ImageId,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageId {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The simple-signing payload for the manifest `digest` of `reference` (repository name).
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
        optional: None,
    };
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Signs `payload` with the PEM private key: the base64 DER signature cosign stores.
pub fn sign(private_pem: &str, payload: &[u8]) -> Result<String, SignatureError> {
    let key = SigningKey::from_pkcs8_pem(private_pem)
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))?;
    let sig: DerSignature = key.sign(payload);
    Ok(base64::engine::general_purpose::STANDARD.encode(sig.as_bytes()))
}

/// Checks that `signature` (base64, DER or fixed-size) over `payload` verifies with the PEM
/// public key, and that the payload signs exactly the manifest `wanted`.
pub fn verify(
    public_pem: &str,
    payload: &[u8],
    signature: &str,
    wanted: &Digest,
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
            "type is {:?}",
            p.critical.kind
        )));
    }
    if p.critical.image.docker_manifest_digest != wanted.as_str() {
        return Err(SignatureError::OtherDigest {
            signed: p.critical.image.docker_manifest_digest,
            wanted: wanted.to_string(),
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

    #[test]
    fn a_signature_verifies_for_its_key_and_its_digest_only() {
        let (private, public) = generate_key().unwrap();
        let (_, other_public) = generate_key().unwrap();
        let d = digest(b"manifest");
        let p = payload("127.0.0.1:5000/sidecars/probe", &d);
        let sig = sign(&private, &p).unwrap();
        verify(&public, &p, &sig, &d).unwrap();
        assert!(matches!(
            verify(&other_public, &p, &sig, &d),
            Err(SignatureError::BadSignature)
        ));
        assert!(matches!(
            verify(&public, &p, &sig, &digest(b"another manifest")),
            Err(SignatureError::OtherDigest { .. })
        ));
        let mut tampered = p.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(verify(&public, &tampered, &sig, &d).is_err());
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
    fn a_trusted_reference_is_not_required_only_the_digest() {
        // A mirror re-homes the image: the reference in the payload differs, the digest holds.
        let (private, public) = generate_key().unwrap();
        let d = digest(b"manifest");
        let p = payload("docker.io/team/sidecar", &d);
        let sig = sign(&private, &p).unwrap();
        verify(&public, &p, &sig, &d).unwrap();
    }
}
