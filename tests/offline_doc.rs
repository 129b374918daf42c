//! docs/OFFLINE.md's "Verifying with any Ed25519 library" is normative: a
//! verifier written from its steps (here, with `ring` and nothing of the
//! broker's) must accept exactly the files `offline verify` accepts. Both
//! are run on a real license file and on every single-byte change of it
//! that a careless decoder could miss (bit flips, case changes, whitespace,
//! control characters), plus truncations and additions.

use license_broker::core::{parse_end_of_date, LicenseFields, MachineId, Millis, OfflineId, OrgName};
use license_broker::offline::{self, SigningKey};

const DOC: &str = include_str!("../docs/OFFLINE.md");

/// The document's steps 1 to 4, literally.
fn doc_verify(file: &[u8], public_key: &[u8; 32]) -> bool {
    // 1. Ends with a newline; remove exactly that byte.
    let Some(content) = file.strip_suffix(b"\n") else { return false };
    // 2. The last line: `signature: ` and 128 lower-case hex digits, nothing else.
    let start = content.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let Some(digits) = content[start..].strip_prefix(b"signature: ") else { return false };
    if digits.len() != 128 || !digits.iter().all(|b| b"0123456789abcdef".contains(b)) {
        return false;
    }
    let nibble = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
    let signature: Vec<u8> = digits.chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect();
    // 3. The message: everything before the last line.
    let message = &file[..start];
    // 4. Ed25519 over the message.
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key).verify(message, &signature).is_ok()
}

#[test]
fn a_verifier_built_from_the_document_refuses_exactly_what_offline_verify_refuses() {
    for step in
        ["1. The file must end with a newline", "128 characters, each one", "of `0123456789abcdef` (lower case only)"]
    {
        assert!(DOC.contains(step), "OFFLINE.md lacks {step:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_generate(&dir.path().join("k.pem")).unwrap();
    let public = offline::parse_public_pem(&key.public_pem()).unwrap();
    let fields = LicenseFields {
        id: OfflineId(0xabcd),
        org: OrgName::new("acme").unwrap(),
        pool: "kse-node-locked-annual".parse().unwrap(),
        machine: MachineId::new("3f2a9c0d5e7b41a8").unwrap(),
        issued: Millis(1_795_737_600_000),
        expires: parse_end_of_date("2027-01-20").unwrap(),
    };
    let file = key.sign(&fields).into_bytes();
    let now = Millis(1_795_737_600_000 + 1000);
    let reference = |f: &[u8]| offline::verify(f, &public, None, now).is_ok();
    assert!(doc_verify(&file, &public) && reference(&file), "the real file verifies both ways");

    let mut variants: Vec<Vec<u8>> = Vec::new();
    for i in 0..file.len() {
        let b = file[i];
        for replacement in [b ^ 1, b ^ 0x20, b.to_ascii_uppercase(), b' ', b'\t', b'\r', 0x0b, 0x0c, b'0', b'A', 0] {
            if replacement != b {
                let mut v = file.clone();
                v[i] = replacement;
                variants.push(v);
            }
        }
        variants.push([&file[..i], &file[i + 1..]].concat()); // a byte removed
    }
    for extra in [&b"\n"[..], b" ", b"\r", b"\x0b", b"0"] {
        variants.push([&file[..], extra].concat()); // a byte appended
        let mut v = file[..file.len() - 1].to_vec(); // a byte before the final newline
        v.extend_from_slice(extra);
        v.push(b'\n');
        variants.push(v);
    }
    let mut disagreements = Vec::new();
    for v in &variants {
        let (doc, reference) = (doc_verify(v, &public), reference(v));
        if doc || reference {
            disagreements.push(format!("doc {doc}, reference {reference}: {:?}", String::from_utf8_lossy(v)));
        }
    }
    assert!(disagreements.is_empty(), "{} changed files accepted:\n{}", disagreements.len(), disagreements.join("\n"));
    assert!(variants.len() > 3000, "{}", variants.len());
}
