//! Measures image import and root disk building.
//!
//! ```text
//! image_to_disk make-layout OUT DIR...       # one gzip layer per host DIR, as an OCI layout
//! image_to_disk to-disk STATE FORMAT SOURCE  # import SOURCE (layout dir or archive), build the disk twice
//! ```
//!
//! `to-disk` prints `bench: image_to_disk_s cocoon=<s>` (import, unpack and
//! mkfs from a cold store) and `bench: image_to_disk_cached_ms cocoon=<ms>`
//! (the same request again), plus the disk's size.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cocoon_runtime::image::build::{BuiltLayer, ImageBuilder};
use cocoon_runtime::image::unpack::Compression;
use cocoon_runtime::image::{DiskFormat, Images};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("make-layout") if args.len() >= 3 => make_layout(Path::new(&args[1]), &args[2..]),
        Some("to-disk") if args.len() == 4 => {
            to_disk(Path::new(&args[1]), args[2].parse()?, Path::new(&args[3]))
        }
        _ => bail!("usage: image_to_disk make-layout OUT DIR... | to-disk STATE FORMAT SOURCE"),
    }
}

fn make_layout(out: &Path, dirs: &[String]) -> Result<()> {
    let mut builder = ImageBuilder::new();
    let mut total = 0u64;
    for dir in dirs {
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        let name = dir.trim_start_matches('/');
        tar.append_dir_all(name, dir)
            .with_context(|| format!("archiving {dir}"))?;
        let tar = tar.into_inner()?;
        total += tar.len() as u64;
        builder = builder.layer(BuiltLayer::new(tar, Compression::Gzip)?);
    }
    let image = builder.build();
    image.write_layout(out, Some("bench:latest"))?;
    println!(
        "layout {} with {} layers, {:.1} MiB uncompressed, manifest {}",
        out.display(),
        dirs.len(),
        total as f64 / (1 << 20) as f64,
        image.manifest
    );
    Ok(())
}

fn to_disk(state: &Path, format: DiskFormat, source: &Path) -> Result<()> {
    let started = Instant::now();
    let images = Images::open(state)?;
    let imported = if source.is_dir() {
        images.import_layout(source, None, Some("bench"))?
    } else {
        images.import_archive(source, None, Some("bench"))?
    };
    let imported_s = started.elapsed().as_secs_f64();
    let disk = images.root_disk(&imported.record.manifest.to_string(), format)?;
    let cold = started.elapsed().as_secs_f64();
    let again = Instant::now();
    let cached = images.root_disk(&imported.record.manifest.to_string(), format)?;
    let cached_ms = again.elapsed().as_secs_f64() * 1000.0;
    if !disk.built || cached.built {
        bail!(
            "expected a cold build then a cached disk (built {} then {})",
            disk.built,
            cached.built
        );
    }
    let meta = std::fs::metadata(&disk.path)?;
    println!(
        "format={format} import_s={imported_s:.2} disk_bytes={} allocated_bytes={} path={}",
        meta.len(),
        meta.blocks() * 512,
        PathBuf::from(&disk.path).display()
    );
    println!("bench: image_to_disk_s cocoon={cold:.2}");
    println!("bench: image_to_disk_cached_ms cocoon={cached_ms:.2}");
    Ok(())
}
