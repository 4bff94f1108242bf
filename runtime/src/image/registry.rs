//! Pulls images from registries over the OCI distribution API into the
//! store. The protocol (URLs, content negotiation, `WWW-Authenticate`
//! challenges, basic auth, bearer-token exchange, TLS) is `oci-client`'s;
//! this module decides what to fetch and where it goes.
//!
//! Every document and blob goes through the store's verify-then-commit path
//! ([`Store::ingest`], [`Store::blob_writer`]) before it is parsed or used:
//! a mismatch is an error naming the blob, and a download cut short leaves
//! only a temporary file that the store removes. Blobs already stored are
//! not downloaded again. Indexes and manifest lists resolve to linux/amd64,
//! and the record is built by the same code as a local import
//! ([`layout::record_from_store`]), so a pulled image is checked like an
//! imported one.
//!
//! It does not save or tag the record (see [`super::Images::pull`]), push,
//! resume partial downloads, read Docker's credential files, or fetch
//! layers in parallel.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::config::ImageConfig;
use super::digest::Digest;
use super::layout::{
    self, desc_digest, Imported, LayoutError, CONFIG_TYPES, INDEX_TYPES, LAYER_TYPES,
    MANIFEST_TYPES, MAX_JSON,
};
use super::store::{Store, StoreError};

/// How deep indexes may nest (as for local imports).
const MAX_INDEX_DEPTH: usize = 4;

/// Errors from a pull. Each says in one line what failed, with the
/// registry, image or blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// What was given (cut to 300 characters).
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The registry has no such repository, tag or manifest.
    #[error("unknown image {reference}: {detail}")]
    UnknownImage {
        /// The reference pulled.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// No connection to the registry (refused, unresolvable, timed out).
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The innermost cause.
        reason: String,
    },
    /// The registry refused the credentials, or wants some (401 or 403).
    #[error("registry {registry} refused authentication for {reference}: {detail}")]
    AuthRefused {
        /// `host[:port]`.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// The TLS handshake failed (an untrusted certificate, or a registry
    /// that speaks plain HTTP).
    #[error("TLS with registry {registry} failed: {reason}")]
    Tls {
        /// `host[:port]`.
        registry: String,
        /// The innermost cause.
        reason: String,
    },
    /// A blob or manifest did not match its digest or size. Nothing of it
    /// was stored.
    #[error("blob {blob} from {registry} failed verification: {detail}")]
    DigestMismatch {
        /// The digest (or, for a manifest pulled by tag, the reference).
        blob: String,
        /// `host[:port]`.
        registry: String,
        /// What did not match.
        detail: String,
    },
    /// The store's file system is full (`ENOSPC` or `EDQUOT`).
    #[error("disk full writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The CA file given for TLS is unusable.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The registry answered something unexpected.
    #[error("registry {registry}: {what}: {detail}")]
    Protocol {
        /// `host[:port]`.
        registry: String,
        /// What was being fetched.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The image's documents are not a usable linux/amd64 image.
    #[error(transparent)]
    Image(LayoutError),
    /// The store failed otherwise.
    #[error(transparent)]
    Store(StoreError),
}

/// Credentials for a registry. Basic credentials are also what `oci-client`
/// exchanges for a bearer token when the registry asks for one.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (anonymous tokens are still fetched when required).
    #[default]
    Anonymous,
    /// A user name and password.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// A bearer token obtained elsewhere, sent as is.
    Token(String),
}

impl fmt::Debug for Credentials {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <hidden> }}")
            }
            Credentials::Token(_) => f.write_str("Token(<hidden>)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Token(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// How to reach a registry.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Credentials sent to the registry of the reference.
    pub credentials: Credentials,
    /// Registries (`host[:port]`, exactly as in references) reached over
    /// plain HTTP. Everything else is HTTPS.
    pub insecure: Vec<String>,
    /// A PEM file of CA certificates trusted for HTTPS, in addition to the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for a read that receives nothing.
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            credentials: Credentials::Anonymous,
            insecure: Vec::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What a pull reports while it runs, in this order: one
/// [`PullEvent::Resolved`], then for each layer (bottom first) zero or more
/// [`PullEvent::Layer`] and one [`PullEvent::LayerDone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullEvent {
    /// The linux/amd64 manifest is known: what the image consists of.
    Resolved {
        /// The manifest's digest (the image's identity).
        manifest: Digest,
        /// How many layers.
        layers: usize,
        /// Sum of the layer sizes.
        bytes: u64,
    },
    /// Bytes of a layer arrived.
    Layer {
        /// Which layer (0 = bottom).
        index: usize,
        /// The layer blob.
        digest: Digest,
        /// Bytes received so far.
        done: u64,
        /// The layer's size.
        total: u64,
    },
    /// A layer is in the store, verified.
    LayerDone {
        /// Which layer (0 = bottom).
        index: usize,
        /// The layer blob.
        digest: Digest,
        /// The layer's size.
        total: u64,
        /// True when it was in the store already and nothing was fetched.
        cached: bool,
    },
}

/// A parsed reference, as a pull uses it.
fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    Reference::try_from(reference).map_err(|e| RegistryError::BadReference {
        reference: reference.chars().take(300).collect(),
        reason: one_line(&e.to_string()),
    })
}

/// Pulls `reference` (`host[:port]/repo[:tag][@digest]`) into `store` and
/// returns the record to save, exactly as an import would produce it.
/// `progress` sees every [`PullEvent`].
pub async fn pull(
    store: &Store,
    reference: &str,
    options: &PullOptions,
    progress: &mut (dyn FnMut(&PullEvent) + Send),
) -> Result<Imported, RegistryError> {
    let reference = parse_reference(reference)?;
    let puller = Puller::new(store, reference, options)?;
    puller.run(progress).await
}

/// What was fetched at one step, for errors.
enum Step<'a> {
    Manifest(&'a Reference),
    Blob(&'a Digest),
}

struct Puller<'a> {
    store: &'a Store,
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    /// The reference as a path, for errors from the layout checks.
    source: PathBuf,
}

impl<'a> Puller<'a> {
    fn new(
        store: &'a Store,
        reference: Reference,
        options: &PullOptions,
    ) -> Result<Puller<'a>, RegistryError> {
        let mut certs = Vec::new();
        if let Some(path) = &options.ca_file {
            certs = read_ca_file(path)?;
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure.clone()),
            extra_root_certificates: certs,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            // Indexes are resolved here, from raw documents.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        // Client::new would fall back to defaults (dropping the CA) on error.
        let client = Client::try_from(config).map_err(|e| RegistryError::CaFile {
            path: options.ca_file.clone().unwrap_or_default(),
            reason: chain(&e),
        })?;
        let source = PathBuf::from(reference.whole());
        Ok(Puller {
            store,
            client,
            auth: options.credentials.to_auth(),
            reference,
            source,
        })
    }

    fn registry(&self) -> String {
        self.reference.resolve_registry().to_owned()
    }

    async fn run(
        &self,
        progress: &mut (dyn FnMut(&PullEvent) + Send),
    ) -> Result<Imported, RegistryError> {
        let (manifest_digest, manifest) = self.resolve().await?;
        let parsed: ImageManifest = serde_json::from_slice(&manifest)
            .map_err(|source| LayoutError::Json {
                what: format!("manifest {manifest_digest}"),
                source,
            })
            .map_err(|e| self.layout_error(e))?;
        self.check_media_types(&manifest_digest, &parsed)?;

        // The config first: a wrong platform or a layer count that does not
        // match is refused before any layer is downloaded.
        let config = parsed.config();
        let config_digest = desc_digest("config", config).map_err(|e| self.layout_error(e))?;
        if config.size() > MAX_JSON {
            return Err(self.layout_error(LayoutError::TooLarge {
                what: format!("config {config_digest}"),
                size: config.size(),
            }));
        }
        self.fetch_blob(&config_digest, config.size(), |_| {})
            .await?;
        let config_bytes = self
            .store
            .read_blob(&config_digest, MAX_JSON)
            .map_err(|e| self.store_error(e))?;
        let image_config = ImageConfig::parse(&config_digest, &config_bytes)
            .map_err(|e| self.layout_error(e.into()))?;
        if image_config.os != "linux" || image_config.architecture != "amd64" {
            return Err(self.layout_error(LayoutError::WrongPlatform {
                manifest: manifest_digest,
                os: image_config.os,
                architecture: image_config.architecture,
            }));
        }
        if image_config.diff_ids.len() != parsed.layers().len() {
            return Err(self.layout_error(LayoutError::LayerCount {
                manifest: manifest_digest,
                layers: parsed.layers().len(),
                diff_ids: image_config.diff_ids.len(),
            }));
        }

        let layers = parsed
            .layers()
            .iter()
            .map(|d| Ok((desc_digest("layer", d)?, d.size())))
            .collect::<Result<Vec<_>, LayoutError>>()
            .map_err(|e| self.layout_error(e))?;
        progress(&PullEvent::Resolved {
            manifest: manifest_digest.clone(),
            layers: layers.len(),
            bytes: layers.iter().map(|(_, size)| size).sum(),
        });
        for (index, (digest, total)) in layers.iter().enumerate() {
            let downloaded = self
                .fetch_blob(digest, *total, |done| {
                    progress(&PullEvent::Layer {
                        index,
                        digest: digest.clone(),
                        done,
                        total: *total,
                    })
                })
                .await?;
            progress(&PullEvent::LayerDone {
                index,
                digest: digest.clone(),
                total: *total,
                cached: !downloaded,
            });
        }

        let record = layout::record_from_store(
            self.store,
            &self.source,
            &manifest_digest,
            manifest.len() as u64,
        )
        .map_err(|e| self.layout_error(e))?;
        tracing::info!(
            reference = %self.reference.whole(),
            image = %record.manifest,
            "pulled image"
        );
        Ok(Imported {
            record,
            names: Vec::new(),
        })
    }

    /// Fetches the reference's manifest, following indexes to the
    /// linux/amd64 image. Every document fetched is stored, verified.
    async fn resolve(&self) -> Result<(Digest, Vec<u8>), RegistryError> {
        let mut current = self.reference.clone();
        let mut expected_size = None;
        for _ in 0..=MAX_INDEX_DEPTH {
            let (digest, bytes) = self.fetch_manifest(&current, expected_size).await?;
            match document_kind(&bytes) {
                Some(Kind::Manifest) => return Ok((digest, bytes)),
                Some(Kind::Index) => {}
                None => {
                    return Err(self.layout_error(LayoutError::MediaType {
                        what: "manifest",
                        digest,
                        media_type: media_type_of(&bytes),
                    }))
                }
            }
            let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|source| {
                self.layout_error(LayoutError::Json {
                    what: format!("index {digest}"),
                    source,
                })
            })?;
            let candidates: Vec<&Descriptor> = index.manifests().iter().collect();
            let chosen = layout::select_platform(&self.source, &candidates)
                .map_err(|e| self.layout_error(e))?;
            let child = desc_digest("manifest", chosen).map_err(|e| self.layout_error(e))?;
            let media = chosen.media_type().to_string();
            if !MANIFEST_TYPES.contains(&media.as_str()) && !INDEX_TYPES.contains(&media.as_str()) {
                return Err(self.layout_error(LayoutError::MediaType {
                    what: "manifest",
                    digest: child,
                    media_type: media,
                }));
            }
            expected_size = Some(chosen.size());
            current = Reference::with_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                child.to_string(),
            );
        }
        Err(self.layout_error(LayoutError::TooDeep(self.source.clone())))
    }

    /// Fetches one manifest or index and stores it under its digest.
    async fn fetch_manifest(
        &self,
        reference: &Reference,
        size: Option<u64>,
    ) -> Result<(Digest, Vec<u8>), RegistryError> {
        let accept: Vec<&str> = MANIFEST_TYPES.iter().chain(INDEX_TYPES).copied().collect();
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accept)
            .await
            .map_err(|e| self.classify(e, Step::Manifest(reference)))?;
        let digest: Digest =
            digest
                .parse()
                .map_err(|e: super::digest::DigestError| RegistryError::Protocol {
                    registry: self.registry(),
                    what: format!("manifest of {}", reference.whole()),
                    detail: format!("unusable digest: {e}"),
                })?;
        let len = bytes.len() as u64;
        if len > MAX_JSON {
            return Err(self.layout_error(LayoutError::TooLarge {
                what: format!("manifest {digest}"),
                size: len,
            }));
        }
        // A reference by digest names what must arrive; by tag, the digest
        // the registry announced (or the content's own) is held to it.
        self.store
            .ingest(&bytes[..], &digest, size.or(Some(len)))
            .map_err(|e| self.store_error(e))?;
        Ok((digest, bytes.to_vec()))
    }

    /// Makes sure blob `digest` is in the store: returns false when it was
    /// there already, true after downloading and verifying it. `on_bytes`
    /// sees the running byte count.
    async fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        mut on_bytes: impl FnMut(u64) + Send,
    ) -> Result<bool, RegistryError> {
        if self
            .store
            .stored_size_matches(digest, Some(size))
            .map_err(|e| self.store_error(e))?
            .is_some()
        {
            return Ok(false);
        }
        let name = digest.to_string();
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, name.as_str())
            .await
            .map_err(|e| self.classify(e, Step::Blob(digest)))?;
        let mut writer = self
            .store
            .blob_writer(digest, Some(size))
            .map_err(|e| self.store_error(e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.stream_error(digest, e))?;
            writer.write(&chunk).map_err(|e| self.store_error(e))?;
            on_bytes(writer.written());
        }
        writer.commit().map_err(|e| self.store_error(e))?;
        Ok(true)
    }

    fn check_media_types(
        &self,
        digest: &Digest,
        manifest: &ImageManifest,
    ) -> Result<(), RegistryError> {
        let refuse = |what, d: &Descriptor| -> RegistryError {
            match desc_digest(what, d) {
                Ok(digest) => self.layout_error(LayoutError::MediaType {
                    what,
                    digest,
                    media_type: d.media_type().to_string(),
                }),
                Err(e) => self.layout_error(e),
            }
        };
        if let Some(mt) = manifest.media_type() {
            let mt = mt.to_string();
            if !MANIFEST_TYPES.contains(&mt.as_str()) {
                return Err(self.layout_error(LayoutError::MediaType {
                    what: "manifest",
                    digest: digest.clone(),
                    media_type: mt,
                }));
            }
        }
        let config = manifest.config();
        if !CONFIG_TYPES.contains(&config.media_type().to_string().as_str()) {
            return Err(refuse("config", config));
        }
        for layer in manifest.layers() {
            if !LAYER_TYPES.contains(&layer.media_type().to_string().as_str()) {
                return Err(refuse("layer", layer));
            }
        }
        Ok(())
    }

    /// Turns an `oci-client` error into the kind of failure it is.
    fn classify(&self, err: OciDistributionError, step: Step<'_>) -> RegistryError {
        let registry = self.registry();
        let what = match &step {
            Step::Manifest(r) => format!("manifest of {}", r.whole()),
            Step::Blob(d) => format!("blob {d}"),
        };
        let auth_refused = |detail: String| RegistryError::AuthRefused {
            registry: registry.clone(),
            reference: self.reference.whole(),
            detail,
        };
        let unknown = |detail: String| match &step {
            Step::Manifest(r) => RegistryError::UnknownImage {
                reference: r.whole(),
                detail,
            },
            Step::Blob(_) => RegistryError::Protocol {
                registry: registry.clone(),
                what: what.clone(),
                detail,
            },
        };
        match err {
            OciDistributionError::UnauthorizedError { .. } => {
                auth_refused("401 Unauthorized".to_owned())
            }
            OciDistributionError::AuthenticationFailure(reason) => auth_refused(one_line(&reason)),
            OciDistributionError::ImageManifestNotFoundError(m) => unknown(one_line(&m)),
            OciDistributionError::RegistryError { envelope, .. } => {
                let detail = envelope_detail(&envelope);
                let has = |codes: &[OciErrorCode]| {
                    envelope.errors.iter().any(|e| codes.contains(&e.code))
                };
                if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                    auth_refused(detail)
                } else if has(&[
                    OciErrorCode::ManifestUnknown,
                    OciErrorCode::NameUnknown,
                    OciErrorCode::NotFound,
                    OciErrorCode::BlobUnknown,
                ]) {
                    unknown(detail)
                } else {
                    RegistryError::Protocol {
                        registry,
                        what,
                        detail,
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let detail = format!("HTTP {code}: {}", one_line(&message));
                match code {
                    401 | 403 => auth_refused(detail),
                    404 => unknown(detail),
                    _ => RegistryError::Protocol {
                        registry,
                        what,
                        detail,
                    },
                }
            }
            OciDistributionError::DigestError(e) => RegistryError::DigestMismatch {
                blob: match &step {
                    Step::Manifest(r) => r.whole(),
                    Step::Blob(d) => d.to_string(),
                },
                registry,
                detail: one_line(&e.to_string()),
            },
            OciDistributionError::RequestError(e) => {
                if e.is_connect() || e.is_timeout() {
                    if e.is_connect() && has_invalid_data(&e) {
                        RegistryError::Tls {
                            registry,
                            reason: innermost(&e),
                        }
                    } else {
                        RegistryError::Unreachable {
                            registry,
                            reason: innermost(&e),
                        }
                    }
                } else {
                    RegistryError::Protocol {
                        registry,
                        what,
                        detail: chain(&e),
                    }
                }
            }
            other => RegistryError::Protocol {
                registry,
                what,
                detail: chain(&other),
            },
        }
    }

    /// An error while a blob's bytes stream in.
    fn stream_error(&self, digest: &Digest, err: io::Error) -> RegistryError {
        let registry = self.registry();
        if let Some(e) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
        {
            return RegistryError::DigestMismatch {
                blob: digest.to_string(),
                registry,
                detail: one_line(&e.to_string()),
            };
        }
        if err.kind() == io::ErrorKind::TimedOut {
            return RegistryError::Unreachable {
                registry,
                reason: innermost(&err),
            };
        }
        RegistryError::Protocol {
            registry,
            what: format!("downloading blob {digest}"),
            detail: chain(&err),
        }
    }

    fn store_error(&self, err: StoreError) -> RegistryError {
        from_store(&self.registry(), err)
    }

    fn layout_error(&self, err: LayoutError) -> RegistryError {
        match err {
            LayoutError::Store(e) => self.store_error(e),
            other => RegistryError::Image(other),
        }
    }
}

/// Maps store failures that have a kind of their own (verification, a full
/// disk); the rest stay store errors.
fn from_store(registry: &str, err: StoreError) -> RegistryError {
    match err {
        StoreError::Verify { digest, source } => RegistryError::DigestMismatch {
            blob: digest.to_string(),
            registry: registry.to_owned(),
            detail: source.to_string(),
        },
        StoreError::Io { path, source, .. } if is_disk_full(&source) => {
            RegistryError::DiskFull { path }
        }
        other => RegistryError::Store(other),
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    code == Some(Errno::NOSPC.raw_os_error()) || code == Some(Errno::DQUOT.raw_os_error())
}

enum Kind {
    Index,
    Manifest,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

/// Whether a document is an index or a manifest: by its `mediaType`, or
/// (older documents may omit it) by the fields it has.
fn document_kind(bytes: &[u8]) -> Option<Kind> {
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match probe.media_type.as_deref() {
        Some(mt) if INDEX_TYPES.contains(&mt) => Some(Kind::Index),
        Some(mt) if MANIFEST_TYPES.contains(&mt) => Some(Kind::Manifest),
        Some(_) => None,
        None if probe.manifests.is_some() => Some(Kind::Index),
        None if probe.layers.is_some() => Some(Kind::Manifest),
        None => None,
    }
}

fn media_type_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Probe>(bytes)
        .ok()
        .and_then(|p| p.media_type)
        .map(|m| m.chars().take(200).collect())
        .unwrap_or_else(|| "none (not a manifest or index)".to_owned())
}

/// The certificates of a PEM file, each on its own (a bundle is accepted).
fn read_ca_file(path: &Path) -> Result<Vec<Certificate>, RegistryError> {
    let bad = |reason: String| RegistryError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let Some(end) = after.find(END) else {
            return Err(bad("a certificate has no END line".to_owned()));
        };
        let block = &after[..end + END.len()];
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: format!("{block}\n").into_bytes(),
        });
        rest = &after[end + END.len()..];
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

fn envelope_detail(envelope: &OciEnvelope) -> String {
    let parts: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| {
            let code = serde_json::to_value(&e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", e.code));
            if e.message.is_empty() {
                code
            } else {
                format!("{code}: {}", e.message)
            }
        })
        .collect();
    one_line(&parts.join("; "))
}

/// An error and its causes, outermost first. `io::Error` hides the error
/// it wraps from `source()` (it forwards to that error's own source), so
/// the walk steps into it explicitly.
fn causes<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Vec<&'e (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(err);
        if out.len() > 32 {
            break;
        }
        cur = match err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    out
}

/// Whether a connect error came from the TLS layer (rustls reports
/// handshake failures as `InvalidData` I/O errors).
fn has_invalid_data(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).iter().any(|err| {
        err.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::InvalidData)
    })
}

/// The deepest cause of an error (what the OS or TLS library said).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let all = causes(e);
    let last = all.last().copied().unwrap_or(e);
    one_line(&last.to_string())
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    one_line(&parts.join(": "))
}

/// Text from a remote or a library, made fit for a one-line error.
fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        let mut cut: String = flat.chars().take(300).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_parse_or_say_why() {
        let r = parse_reference("127.0.0.1:5000/busybox:latest").unwrap();
        assert_eq!(r.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "busybox");
        assert_eq!(r.tag(), Some("latest"));
        let err = parse_reference("UPPER/Case").unwrap_err().to_string();
        assert!(err.starts_with("invalid image reference"), "{err}");
    }

    #[test]
    fn documents_are_told_apart() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(document_kind(idx), Some(Kind::Index)));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}"#;
        assert!(matches!(document_kind(m), Some(Kind::Manifest)));
        let other = br#"{"mediaType":"application/vnd.example+json"}"#;
        assert!(document_kind(other).is_none());
        assert!(document_kind(b"not json").is_none());
    }

    #[test]
    fn a_full_disk_is_its_own_error() {
        let err = from_store(
            "r",
            StoreError::Io {
                op: "write",
                path: PathBuf::from("/s/tmp/blob-1"),
                source: io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            },
        );
        assert_eq!(err.to_string(), "disk full writing /s/tmp/blob-1");
    }

    #[test]
    fn credentials_hide_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Token("t0k".into())).contains("t0k"));
    }

    #[test]
    fn ca_files_split_into_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, format!("# bundle\n{cert}{cert}")).unwrap();
        assert_eq!(read_ca_file(&path).unwrap().len(), 2);
        std::fs::write(&path, "nothing").unwrap();
        assert!(matches!(
            read_ca_file(&path),
            Err(RegistryError::CaFile { .. })
        ));
    }

    #[test]
    fn remote_text_fits_one_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert!(one_line(&"x".repeat(1000)).chars().count() <= 301);
    }
}
