//! Content digests (`sha256:<hex>`, `sha512:<hex>`): parsing, computing, and
//! verifying a stream while it is read.
//!
//! Everything an image brings is addressed by digest, so this is where hostile
//! input first becomes a typed value: a [`Digest`] can only hold a known
//! algorithm and lowercase hex of the right length, which makes it safe to use
//! as a file name. This module does no I/O of its own beyond wrapping a
//! reader; it does not know about blobs, stores or media types.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Errors from parsing or verifying a digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The text is not `<algorithm>:<hex>`.
    #[error("malformed digest {value:?}: {reason}")]
    Malformed {
        /// The text that was parsed (cut to 200 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The algorithm is not one Cocoon verifies.
    #[error("unsupported digest algorithm {algorithm:?} (expected sha256 or sha512)")]
    UnsupportedAlgorithm {
        /// The algorithm named in the digest.
        algorithm: String,
    },
    /// The content hashes to something else.
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    Mismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// The content has another length than announced.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest the content was supposed to have.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The size read (or at least that much, when reading stopped early).
        actual: u64,
    },
}

/// A hash algorithm allowed in OCI digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm of nearly every image.
    Sha256,
    /// SHA-512, registered by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The name used in digests and in blob paths (`blobs/<name>/<hex>`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: a known algorithm and lowercase hex of the
/// right length, so [`Digest::hex`] is always a safe file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, lowercase, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `bytes` hash to this digest.
    pub fn verify_bytes(&self, bytes: &[u8]) -> Result<(), DigestError> {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        let actual = h.finish();
        if &actual == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| DigestError::Malformed {
            value: s.chars().take(200).collect(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| malformed("no ':' between algorithm and hex"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(DigestError::UnsupportedAlgorithm {
                    algorithm: other.chars().take(64).collect(),
                })
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(malformed("hex part has the wrong length"));
        }
        // Uppercase is refused, not folded: the spec says lowercase, and two
        // spellings of one digest would name two files.
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed("hex part is not lowercase hexadecimal"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

/// An incremental hash for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hash.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// A reader that hashes what passes through it and counts the bytes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }

    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A reader that checks its content against an expected digest and size.
///
/// It fails a read as soon as more bytes arrive than announced (so a hostile
/// source cannot stream forever), and [`VerifyingReader::verify`] checks the
/// digest once the content is consumed. Callers must not trust what they
/// read until `verify` returned `Ok`.
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Digest,
    size: Option<u64>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`; `size` is the announced length, if any.
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> Self {
        VerifyingReader {
            inner: HashingReader::new(inner, expected.algorithm()),
            expected,
            size,
        }
    }

    /// Checks length and digest of everything read. Call after EOF.
    pub fn verify(self) -> Result<u64, DigestError> {
        let (actual, count) = self.inner.finish();
        if let Some(size) = self.size {
            if count != size {
                return Err(DigestError::SizeMismatch {
                    digest: self.expected,
                    expected: size,
                    actual: count,
                });
            }
        }
        if actual != self.expected {
            return Err(DigestError::Mismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok(count)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(size) = self.size {
            if self.inner.count() > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::SizeMismatch {
                        digest: self.expected.clone(),
                        expected: size,
                        actual: self.inner.count(),
                    },
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn refuses_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &EMPTY.to_uppercase(),
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
            &format!("{EMPTY}0"),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn verifying_reader_accepts_right_content() {
        let d = Digest::sha256_of(b"hello");
        let mut r = VerifyingReader::new(&b"hello"[..], d, Some(5));
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.verify().unwrap(), 5);
    }

    #[test]
    fn verifying_reader_names_the_mismatch() {
        let d = Digest::sha256_of(b"hello");
        let mut r = VerifyingReader::new(&b"hellO"[..], d.clone(), Some(5));
        io::copy(&mut r, &mut io::sink()).unwrap();
        let err = r.verify().unwrap_err().to_string();
        assert!(err.contains(&d.to_string()), "{err}");
    }

    #[test]
    fn verifying_reader_stops_at_oversize() {
        let d = Digest::sha256_of(b"hello");
        let mut r = VerifyingReader::new(&b"hello world"[..], d, Some(5));
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
    }

    #[test]
    fn verifying_reader_catches_short_content() {
        let d = Digest::sha256_of(b"hello");
        let mut r = VerifyingReader::new(&b"hell"[..], d, Some(5));
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert!(matches!(
            r.verify(),
            Err(DigestError::SizeMismatch { actual: 4, .. })
        ));
    }
}
