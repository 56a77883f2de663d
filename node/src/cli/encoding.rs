//! How the CLI reads and prints keys and values: as text, hex or base64.

use anyhow::{bail, Result};

/// The encoding of keys and values on the command line and in output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// UTF-8 text as typed; output escapes bytes that are not printable ASCII as `\xNN`.
    #[default]
    Text,
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Format {
    /// Decodes a command-line argument into bytes.
    pub fn decode(self, input: &str) -> Result<Vec<u8>> {
        match self {
            Format::Text => Ok(input.as_bytes().to_vec()),
            Format::Hex => {
                if !input.len().is_multiple_of(2) {
                    bail!("hex input {input:?} has an odd number of digits");
                }
                (0..input.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(input.get(i..i + 2).unwrap_or(""), 16)
                            .map_err(|_| anyhow::anyhow!("{input:?} is not valid hex"))
                    })
                    .collect()
            }
            Format::Base64 => decode_base64(input),
        }
    }

    /// Encodes bytes for output.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Format::Text => bytes
                .iter()
                .map(|&b| match b {
                    b'\\' => "\\\\".to_string(),
                    0x20..=0x7e => (b as char).to_string(),
                    _ => format!("\\x{b:02x}"),
                })
                .collect(),
            Format::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            Format::Base64 => encode_base64(bytes),
        }
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode_base64(input: &str) -> Result<Vec<u8>> {
    let input = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in input.bytes() {
        let Some(v) = B64.iter().position(|&x| x == c) else {
            bail!("{input:?} is not valid base64");
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(Format::Base64.encode(b"strata"), "c3RyYXRh");
        assert_eq!(Format::Base64.encode(b"st"), "c3Q=");
        assert_eq!(Format::Hex.encode(&[0, 255]), "00ff");
        assert_eq!(Format::Text.encode(b"a\x00b\\"), "a\\x00b\\\\");
        assert!(Format::Hex.decode("abc").is_err());
        assert!(Format::Hex.decode("zz").is_err());
        assert!(Format::Base64.decode("@@").is_err());
    }

    proptest! {
        #[test]
        fn roundtrips(bytes: Vec<u8>) {
            for f in [Format::Hex, Format::Base64] {
                prop_assert_eq!(f.decode(&f.encode(&bytes)).unwrap(), bytes.clone());
            }
        }
    }
}
