//! The generated bearer token of a store without `spec.auth.existingSecret`.

use rand::RngCore;
use rand::rngs::OsRng;

/// A fresh 256-bit token from the OS CSPRNG, as 64 lowercase hex digits:
/// URL-, header- and shell-safe, and a single line as the token file needs.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_hex_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
