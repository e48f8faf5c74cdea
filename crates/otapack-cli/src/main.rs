//! `otapack`: a thin command line over the otapack library.
//!
//! Exit status: 0 success, 1 failure (the cause is printed as one line on stderr), 2 usage.

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use otapack::build::{
    build_delta, build_full, build_in_place, BuildOptions, DEFAULT_DEVICE_RAM, DEFAULT_ZSTD_LEVEL,
};
use otapack::describe::{describe, SignMethod};
use otapack::image::{self, ImageFormat, LoadOptions};
use otapack::keys::{hex, load_public_key, KeyAlgorithm, PublicKeyFile, SigningKey};
use otapack::otapack_core::verify::Policy;
use otapack::report::{self, PackageInfo, VerifyReport};
use otapack::{write_atomic, Error};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Counts heap use, so `simulate` can report the device session's peak heap.
#[global_allocator]
static ALLOC: otapack_probe::CountingAlloc = otapack_probe::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "otapack",
    version,
    about = "Build, sign, verify and apply firmware update packages (.ota.md5.bin)"
)]
#[command(after_help = "Exit status: 0 success, 1 failure (cause on stderr), 2 usage error.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a key pair: PKCS#8 PEM private key and SPKI PEM public key.
    Keygen(KeygenArgs),
    /// Build an update package from a firmware image (.bin, ELF or Intel HEX): full, or a
    /// delta against the image a device runs now (--old), two-slot or in place (--in-place).
    Build(Box<BuildArgs>),
    /// Add a signature to an existing package (its contents are verified first).
    Sign(SignArgs),
    /// Verify signatures, manifest, every slice, the image digest and the trailer MD5.
    Verify(VerifyArgs),
    /// Show what a package declares (nothing is verified).
    Inspect(InspectArgs),
    /// Rebuild the image from a package; writes it only if everything verified.
    Apply(ApplyArgs),
    /// Print the JSON a cloud OTA service pushes to devices for this package.
    Describe(DescribeArgs),
    /// Run the device update session on a simulated two-slot device, optionally cutting the
    /// power at flash operations; report RAM, flash traffic and whether every cut was survived.
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// ed25519, rsa-2048, rsa-3072, rsa-4096 (PKCS#1 v1.5 signatures), rsa-pss-2048/3072/4096.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KeyAlgorithm::NAMES))]
    algorithm: String,
    /// Where to write the private key (created with mode 0600).
    #[arg(long, value_name = "KEY.pem")]
    private: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "KEY.pub.pem")]
    public: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Bin,
    Elf,
    Ihex,
}

#[derive(Args)]
struct BuildArgs {
    /// The new firmware image.
    #[arg(long, value_name = "IMAGE")]
    new: PathBuf,
    /// The image devices run now: build a two-slot delta package against it (read with the
    /// same --format/--address-range as --new).
    #[arg(long, value_name = "IMAGE")]
    old: Option<PathBuf>,
    /// With --old: build a single-slot in-place delta (kind delta-in-place). The device writes
    /// the new image over the old one in the same slot, slice by slice through a scratch area;
    /// each slice reads only old bytes not yet overwritten. Both apply orders are tried and the
    /// smaller package is kept.
    #[arg(long, requires = "old")]
    in_place: bool,
    /// With --in-place: the device's scratch area, which must hold one slice (default: the
    /// slice size).
    #[arg(long, value_name = "SIZE", requires = "in_place", value_parser = parse_size)]
    scratch_size: Option<u64>,
    /// Private key to sign with (repeat for several signatures). Without one the package is unsigned.
    #[arg(long, value_name = "KEY.pem")]
    key: Vec<PathBuf>,
    #[arg(long, value_name = "V")]
    software_version: String,
    #[arg(long, value_name = "T")]
    software_type: Option<String>,
    /// A hardware version the package is for (repeatable; none: any hardware).
    #[arg(long, value_name = "H")]
    hardware_version: Vec<String>,
    /// Anti-rollback counter: devices refuse packages below the one they store.
    #[arg(long, value_name = "N", default_value_t = 0)]
    security_counter: u64,
    /// Slice size: a power of two from 4KiB to 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    slice_size: u64,
    /// Largest zstd window a device must hold (power of two, 1KiB up to the slice size).
    /// Setting this, --zstd-block or --segment-size replaces the fit to --device-ram; the
    /// others then default to 8KiB window, no block limit, 4KiB segments.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    zstd_window: Option<u64>,
    /// Largest zstd block (decoded) a device must hold, power of two from 1KiB (with explicit
    /// settings, default no limit beyond the window and zstd's 128KiB; the fit picks one).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    zstd_block: Option<u64>,
    /// Cut payloads longer than this into hash-chained segments, so a device buffers one
    /// segment (power of two, 1KiB up to the slice size; 0: one digest per payload, so a
    /// device buffers a whole payload).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    segment_size: Option<u64>,
    /// Bytes of the link that ends each segment but the last: 16 (the first half of the next
    /// segment's SHA-256, 128-bit second-preimage resistance) or 32 (all of it).
    #[arg(long, value_name = "BYTES", default_value_t = 16,
          value_parser = clap::builder::PossibleValuesParser::new(["16", "32"])
              .map(|v| if v == "32" { 32u8 } else { 16 }))]
    segment_link: u8,
    /// RAM the device gives the updater, stack included (default 64KiB): picks the largest
    /// zstd block limit, window and segment size that fit, or a smaller window with larger
    /// segments when much of the image is stored raw and that makes the package smaller (a
    /// smaller budget costs package size), and fails if the package cannot fit. The need is
    /// recorded in the manifest either way.
    #[arg(long, value_name = "SIZE", value_parser = parse_size,
          conflicts_with_all = ["zstd_window", "zstd_block", "segment_size"])]
    device_ram: Option<u64>,
    /// zstd compression level (1-22); from 19 up, patch op streams take 22.
    #[arg(long, default_value_t = DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    /// Input format (default: detected from the content).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Keep only this address range of an ELF/HEX input, e.g. 0x0:0x40000 (for a raw binary:
    /// START is its load address).
    #[arg(long, value_name = "START:END", value_parser = image::parse_range)]
    address_range: Option<(u64, u64)>,
    /// The flash's erased byte value.
    #[arg(long, default_value = "0xFF", value_parser = parse_byte)]
    erase_value: u8,
    /// Creation time in Unix seconds (default: $SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "UNIX")]
    created: Option<u64>,
    /// Expiry in Unix seconds: devices with a trusted clock refuse the package after it.
    #[arg(long, value_name = "UNIX")]
    expires: Option<u64>,
    /// Output package.
    #[arg(short, long, value_name = "OUT.ota.md5.bin")]
    output: PathBuf,
}

#[derive(Args)]
struct SignArgs {
    package: PathBuf,
    /// Private key to add a signature with (repeatable).
    #[arg(long, value_name = "KEY.pem", required = true)]
    key: Vec<PathBuf>,
    /// Output (default: replace PKG atomically).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// For a delta package: the base image it applies to (.bin, ELF or Intel HEX; needed to verify it first).
    #[arg(long, value_name = "OLD")]
    base: Option<PathBuf>,
}

#[derive(Args)]
struct VerifyArgs {
    package: PathBuf,
    /// A trusted public key (SPKI PEM); repeatable.
    #[arg(long, value_name = "PUB.pem")]
    key: Vec<PathBuf>,
    /// Accept a package without a valid signature from a trusted key (integrity checks only).
    #[arg(long)]
    allow_unsigned: bool,
    /// Valid signatures from distinct trusted keys required (default 1).
    #[arg(long, value_name = "N", conflicts_with = "allow_unsigned",
          value_parser = clap::value_parser!(u8).range(1..=16))]
    require: Option<u8>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// For a delta package: the base image it applies to (.bin, ELF or Intel HEX; needed to rebuild every slice).
    #[arg(long, value_name = "OLD")]
    base: Option<PathBuf>,
}

#[derive(Args)]
struct InspectArgs {
    package: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ApplyArgs {
    package: PathBuf,
    /// Where to write the rebuilt image (only after everything verified).
    #[arg(short, long, value_name = "IMAGE")]
    output: PathBuf,
    /// Trusted public key; without any, signatures are not checked (integrity only, with a warning).
    #[arg(long, value_name = "PUB.pem")]
    key: Vec<PathBuf>,
    /// With --key: accept a package without a valid trusted signature.
    #[arg(long)]
    allow_unsigned: bool,
    /// For a delta package: the base image it applies to, the image the device runs now (.bin, ELF or Intel HEX).
    #[arg(long, value_name = "OLD")]
    base: Option<PathBuf>,
}

#[derive(Args)]
struct SimulateArgs {
    package: PathBuf,
    /// The image the device runs now (the base of a delta package; for a full package, the
    /// old image the device must still boot after a cut). .bin, ELF or Intel HEX.
    #[arg(long, value_name = "OLD")]
    base: Option<PathBuf>,
    /// Trusted public key; without any, signatures are not checked (with a warning).
    #[arg(long, value_name = "PUB.pem")]
    key: Vec<PathBuf>,
    /// Cut the power during every flash operation of the update ("every", one run each), or
    /// during N operations spread over it.
    #[arg(long, value_name = "every|N")]
    power_cut: Option<String>,
    /// How much of the cut operation still happens, in thousandths (0 to 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=1000))]
    torn: u32,
    /// Download chunk size.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    chunk: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SignMethodArg {
    Md5,
    Sha256,
}

#[derive(Args)]
struct DescribeArgs {
    package: PathBuf,
    /// Where devices will download the package from.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "md5")]
    sign_method: SignMethodArg,
}

/// Parses sizes such as 65536, 64KiB, 64K, 1MiB, 1M (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB").or_else(|| t.strip_suffix('K')) {
        (n, 1u64 << 10)
    } else if let Some(n) = t.strip_suffix("MiB").or_else(|| t.strip_suffix('M')) {
        (n, 1u64 << 20)
    } else {
        (t, 1)
    };
    let v = image::parse_u64(num)?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let v = image::parse_u64(s)?;
    u8::try_from(v).map_err(|_| format!("'{s}' is not a byte value (0-255)"))
}

fn log2_of(v: u64, what: &str) -> Result<u8, Error> {
    if v.is_power_of_two() {
        Ok(v.trailing_zeros() as u8)
    } else {
        Err(Error::Invalid(format!(
            "{what} must be a power of two, got {v}"
        )))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The base image of a delta: raw bytes, or an ELF/Intel HEX file laid out as `build` does.
fn load_base(path: Option<&Path>) -> Result<Option<Vec<u8>>, Error> {
    path.map(|p| {
        image::load(
            p,
            &LoadOptions {
                erase_value: 0xFF,
                ..Default::default()
            },
        )
        .map(|i| i.data)
    })
    .transpose()
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, Error> {
    paths.iter().map(|p| SigningKey::from_pem_file(p)).collect()
}

fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKeyFile>, Error> {
    paths.iter().map(|p| load_public_key(p)).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn keygen(a: KeygenArgs) -> Result<(), Error> {
    let alg = KeyAlgorithm::parse(&a.algorithm)
        .ok_or_else(|| Error::Invalid(format!("unknown algorithm {}", a.algorithm)))?;
    for p in [&a.private, &a.public] {
        if p.exists() && !a.force {
            return Err(Error::Invalid(format!(
                "{} exists; pass --force to overwrite",
                p.display()
            )));
        }
    }
    let key = SigningKey::generate(alg)?;
    let private = key.to_pkcs8_pem()?;
    write_private(&a.private, private.as_bytes())?;
    write_atomic(&a.public, key.public_pem()?.as_bytes())?;
    println!("key id {}", hex(&key.key_id()));
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn build(a: BuildArgs) -> Result<(), Error> {
    let keys = load_keys(&a.key)?;
    let format = match a.format {
        FormatArg::Auto => None,
        FormatArg::Bin => Some(ImageFormat::Bin),
        FormatArg::Elf => Some(ImageFormat::Elf),
        FormatArg::Ihex => Some(ImageFormat::IntelHex),
    };
    let load_opts = LoadOptions {
        format,
        range: a.address_range,
        erase_value: a.erase_value,
    };
    let img = image::load(&a.new, &load_opts)?;
    let old = a
        .old
        .as_deref()
        .map(|p| image::load(p, &load_opts))
        .transpose()?;
    let created = match a.created {
        Some(c) => c,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .trim()
                .parse()
                .map_err(|_| Error::Invalid("SOURCE_DATE_EPOCH is not a number".into()))?,
            Err(_) => now(),
        },
    };
    let mut opts = BuildOptions::new(a.software_version);
    opts.slice_log2 = log2_of(a.slice_size, "--slice-size")?;
    let explicit = a.zstd_window.is_some() || a.zstd_block.is_some() || a.segment_size.is_some();
    if let Some(w) = a.zstd_window {
        opts.zstd_window_log = log2_of(w, "--zstd-window")?;
    }
    if let Some(b) = a.zstd_block {
        opts.zstd_block_log = log2_of(b, "--zstd-block")?;
    }
    opts.segment_log = match a.segment_size {
        None => opts.segment_log,
        Some(0) => 0,
        Some(s) => log2_of(s, "--segment-size")?,
    };
    opts.segment_link_len = a.segment_link;
    let budget = match a.device_ram {
        None if explicit => None,
        None => Some(DEFAULT_DEVICE_RAM),
        b => b,
    };
    opts.zstd_level = a.zstd_level;
    opts.software_type = a.software_type;
    opts.hardware_versions = a.hardware_version;
    // After the identity fields, which take manifest bytes the device buffers.
    if let Some(budget) = budget {
        let len = img.data.len() as u64;
        if a.in_place {
            opts.fit_device_ram_in_place(budget, len)
        } else {
            opts.fit_device_ram(budget, len)
        }
        .map_err(|e| match a.device_ram {
            Some(_) => e,
            None => Error::Invalid(format!(
                "{e} (64KiB is the default --device-ram): pass --device-ram with the RAM your \
                     device gives the updater, a larger --slice-size (fewer slices, a smaller \
                     manifest), or --zstd-window/--segment-size to set the settings yourself"
            )),
        })?;
    }
    opts.security_counter = a.security_counter;
    opts.created = created;
    opts.expires = a.expires;
    opts.erase_value = a.erase_value;
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let pkg = match &old {
        Some(old) if a.in_place => {
            let scratch = a.scratch_size.unwrap_or(a.slice_size);
            if a.slice_size > scratch {
                return Err(Error::Invalid(format!(
                    "--slice-size ({} bytes) must not exceed --scratch-size ({scratch} bytes): \
                     the device decodes each slice into its scratch area",
                    a.slice_size
                )));
            }
            build_in_place(old, &img, &opts, scratch, &refs)?
        }
        Some(old) => build_delta(old, &img, &opts, &refs)?,
        None => build_full(&img, &opts, &refs)?,
    };
    write_atomic(&a.output, &pkg)?;
    if keys.is_empty() {
        eprintln!("otapack: warning: no --key given: the package is unsigned");
    }
    let info = PackageInfo::of(&otapack::otapack_core::Package::parse(&pkg)?);
    println!(
        "{}: {} bytes, {} package of {} image of {} bytes at 0x{:x}, {} slice(s), {} signature(s){}",
        a.output.display(),
        pkg.len(),
        info.kind,
        img.format.name(),
        img.data.len(),
        img.load_address,
        img.data.len().div_ceil(1 << opts.slice_log2),
        keys.len(),
        info.apply_order
            .map_or(String::new(), |o| format!(", {o} apply order"))
    );
    Ok(())
}

fn sign(a: SignArgs) -> Result<(), Error> {
    let keys = load_keys(&a.key)?;
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let base = load_base(a.base.as_deref())?;
    let pkg = otapack::sign::add_signatures(&read(&a.package)?, &refs, base.as_deref())?;
    let out = a.output.unwrap_or(a.package);
    write_atomic(&out, &pkg)?;
    for k in &keys {
        println!(
            "signed {} with {} key {}",
            out.display(),
            k.algorithm().name(),
            hex(&k.key_id())
        );
    }
    Ok(())
}

fn print_identity(info: &PackageInfo) {
    let hw = if info.hardware_versions.is_empty() {
        "any".to_string()
    } else {
        info.hardware_versions.join(", ")
    };
    println!(
        "kind: {} (format v{}), {} bytes",
        info.kind, info.format_version, info.package_size
    );
    println!(
        "software: version {}, type {}, hardware {}, security counter {}",
        info.software_version,
        info.software_type.as_deref().unwrap_or("-"),
        hw,
        info.security_counter
    );
    println!(
        "created: {}, expires: {}",
        info.created,
        info.expires.map_or("never".to_string(), |e| e.to_string())
    );
    println!(
        "image: {} bytes at 0x{:x}, erase value 0x{:02x}, sha256 {}",
        info.image_size, info.load_address, info.erase_value, info.image_sha256
    );
    if info.kind != "full" {
        println!(
            "base image: {} bytes, sha256 {}",
            info.base_size, info.base_sha256
        );
    }
    if let Some(order) = info.apply_order {
        println!(
            "apply: in place over the base image, {order} slice order (payloads stay in index order)"
        );
    }
    println!(
        "slices: {} x {} bytes, zstd window {}",
        info.slice_count,
        info.slice_size,
        if info.zstd_window_log == 0 {
            "-".to_string()
        } else {
            format!("{} bytes", 1u64 << info.zstd_window_log)
        }
    );
    let pow = |log: u8| {
        if log == 0 {
            "-".to_string()
        } else {
            format!("{} bytes", 1u64 << log)
        }
    };
    println!(
        "device RAM: {} bytes recorded, {} bytes needed by otapack-core's applier (zstd block {}, payload segment {}{})",
        info.device_ram,
        info.device_ram_needed,
        pow(info.zstd_block_log),
        pow(info.segment_log),
        if info.segment_log == 0 {
            String::new()
        } else {
            format!(", {}-byte links", info.segment_link_len)
        }
    );
    println!("signed sha256 (header+manifest): {}", info.signed_sha256);
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn verify(a: VerifyArgs) -> Result<(), Error> {
    let trusted = load_public_keys(&a.key)?;
    if trusted.is_empty() && !a.allow_unsigned {
        return Err(Error::Invalid(
            "no trusted key: pass --key PUB.pem (or --allow-unsigned)".into(),
        ));
    }
    let bytes = read(&a.package)?;
    let policy = Policy {
        required_signatures: a.require.unwrap_or(1),
        allow_unsigned: a.allow_unsigned,
    };
    let base = load_base(a.base.as_deref())?;
    let r = report::verify(&bytes, &trusted, &policy, base.as_deref());
    if a.json {
        print_json(&r)?;
    } else {
        print_verify(&a.package, &r);
    }
    match (r.ok, r.error) {
        (true, _) => Ok(()),
        (false, e) => Err(Error::Invalid(format!(
            "verification failed: {}",
            e.unwrap_or_else(|| "unknown".into())
        ))),
    }
}

fn print_verify(path: &Path, r: &VerifyReport) {
    println!("package: {}", path.display());
    let Some(info) = &r.package else { return };
    print_identity(info);
    let okstr = |b: bool| if b { "ok" } else { "MISMATCH" };
    if let Some(md5) = r.md5_ok {
        println!("trailer md5: {}", okstr(md5));
    }
    if r.signatures.is_empty() {
        println!("signatures: none");
    }
    for (i, s) in r.signatures.iter().enumerate() {
        let by = s
            .trusted_key
            .as_ref()
            .map_or(String::new(), |k| format!(" ({k})"));
        println!(
            "signature {}: {} key {}: {}{}",
            i + 1,
            s.algorithm,
            s.key_id,
            s.status,
            by
        );
    }
    println!(
        "slices verified: {}/{}",
        r.slices_verified, info.slice_count
    );
    println!(
        "image sha256: {}",
        if r.image_sha256_ok {
            "ok"
        } else {
            "not confirmed"
        }
    );
    if r.ok {
        if r.valid_trusted_signatures == 0 {
            println!("OK (integrity only): no valid signature from a trusted key; --allow-unsigned given");
        } else {
            println!(
                "VERIFIED: {} valid signature(s) from trusted keys",
                r.valid_trusted_signatures
            );
        }
    }
}

fn inspect(a: InspectArgs) -> Result<(), Error> {
    let bytes = read(&a.package)?;
    let pkg = otapack::otapack_core::Package::parse(&bytes)?;
    let info = PackageInfo::of(&pkg);
    if a.json {
        return print_json(&info);
    }
    println!(
        "package: {} (not verified: use `otapack verify`)",
        a.package.display()
    );
    print_identity(&info);
    println!(
        "payloads: {} bytes from offset {}",
        info.payload_len, info.payload_start
    );
    for s in &info.signatures {
        println!(
            "signature: {} key {} ({} bytes)",
            s.algorithm, s.key_id, s.signature_len
        );
    }
    println!(
        "{:>6} {:>6} {:>10} {:>8}  slice sha256",
        "slice", "method", "offset", "length"
    );
    for s in &info.slices {
        // A patch names its format (2: predicted references).
        let method = match s.method {
            "patch" => format!("patch{}", s.arg),
            m => m.to_string(),
        };
        println!(
            "{:>6} {:>6} {:>10} {:>8}  {}",
            s.index, method, s.payload_offset, s.payload_len, s.slice_sha256
        );
    }
    Ok(())
}

/// Trusted keys and policy for the commands that run the device code (`apply`, `simulate`):
/// without any `--key`, integrity only, with a warning.
fn device_trust(
    keys: &[PathBuf],
    allow_unsigned: bool,
) -> Result<(Vec<otapack::otapack_core::keys::TrustedKey>, Policy), Error> {
    let trusted: Vec<_> = load_public_keys(keys)?.into_iter().map(|k| k.key).collect();
    let policy = if trusted.is_empty() {
        eprintln!("otapack: warning: no --key given: signatures are not checked (integrity only)");
        Policy {
            required_signatures: 0,
            allow_unsigned: true,
        }
    } else {
        Policy {
            required_signatures: 1,
            allow_unsigned,
        }
    };
    Ok((trusted, policy))
}

fn apply(a: ApplyArgs) -> Result<(), Error> {
    let (trusted, policy) = device_trust(&a.key, a.allow_unsigned)?;
    let bytes = read(&a.package)?;
    let base = load_base(a.base.as_deref())?;
    otapack::apply::apply_to_file(&bytes, &trusted, &policy, base.as_deref(), &a.output)?;
    println!(
        "{}: image written, every slice and the image digest verified",
        a.output.display()
    );
    Ok(())
}

fn describe_cmd(a: DescribeArgs) -> Result<(), Error> {
    let method = match a.sign_method {
        SignMethodArg::Md5 => SignMethod::Md5,
        SignMethodArg::Sha256 => SignMethod::Sha256,
    };
    print_json(&describe(&read(&a.package)?, &a.url, method)?)
}

fn simulate_cmd(a: SimulateArgs) -> Result<(), Error> {
    use otapack::simulate::{simulate, CutPlan, SimOptions};
    let cuts = match a.power_cut.as_deref() {
        None => CutPlan::None,
        Some("every") => CutPlan::Every,
        Some(n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => CutPlan::Sample(n),
            _ => {
                return Err(Error::Invalid(format!(
                    "--power-cut: expected 'every' or a positive count, got '{n}'"
                )))
            }
        },
    };
    let (trusted, policy) = device_trust(&a.key, false)?;
    let bytes = read(&a.package)?;
    let base = load_base(a.base.as_deref())?;
    let opts = SimOptions {
        cuts,
        torn_permille: a.torn,
        chunk: usize::try_from(a.chunk.max(1)).unwrap_or(usize::MAX),
        policy,
        recut: None,
    };
    let r = simulate(
        &bytes,
        base.as_deref(),
        &trusted,
        &opts,
        &otapack_probe::measure,
    )?;
    if a.json {
        print_json(&serde_json::json!({
            "layout": r.layout,
            "cuts_injected": r.cuts_injected,
            "cuts_survived": r.cuts_survived,
            "first_failure": r.first_failure.as_ref().map(|(op, why)| serde_json::json!({"operation": op, "cause": why})),
            "final_sha256": hex(&r.final_sha256),
            "peak_heap_bytes": r.peak_heap_bytes,
            "peak_stack_bytes": r.peak_stack_bytes,
            "bytes_read": r.bytes_read,
            "bytes_written": r.bytes_written,
            "erases_total": r.erases_total,
            "erases_max_per_sector": r.erases_max_per_sector,
            "flash_ops": r.flash_ops,
            "scratch_bytes": r.scratch_bytes,
        }))?;
    } else {
        println!("layout:                {}", r.layout);
        println!("final image sha256:    {}", hex(&r.final_sha256));
        match r.peak_heap_bytes {
            Some(h) => println!("peak heap:             {h} bytes (buffers and decoder)"),
            None => println!("peak heap:             not measured"),
        }
        println!("peak stack:            {} bytes", r.peak_stack_bytes);
        println!(
            "flash read / written:  {} / {} bytes",
            r.bytes_read, r.bytes_written
        );
        println!(
            "erases:                {} total, {} max per sector",
            r.erases_total, r.erases_max_per_sector
        );
        println!("flash operations:      {}", r.flash_ops);
        println!("scratch used:          {} bytes", r.scratch_bytes);
        println!(
            "power cuts:            {} injected, {} survived",
            r.cuts_injected, r.cuts_survived
        );
    }
    if let Some((op, why)) = &r.first_failure {
        return Err(Error::Invalid(format!(
            "{} of {} power cuts not survived; first at flash operation {op}: {why}",
            r.cuts_injected - r.cuts_survived,
            r.cuts_injected
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => keygen(a),
        Command::Build(a) => build(*a),
        Command::Sign(a) => sign(a),
        Command::Verify(a) => verify(a),
        Command::Inspect(a) => inspect(a),
        Command::Apply(a) => apply(a),
        Command::Describe(a) => describe_cmd(a),
        Command::Simulate(a) => simulate_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otapack: error: {e}");
            ExitCode::FAILURE
        }
    }
}
