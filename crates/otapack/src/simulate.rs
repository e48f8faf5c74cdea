//! `otapack simulate`: the device update session ([`otapack_core::session`]) run on a
//! simulated device, with power cuts injected at flash operations.
//!
//! The simulated device (two-slot) has two image slots and a two-sector update-state region on
//! [`SimFlash`] (4-byte program unit, programmed once per erase, 4 KiB sectors), sharing one
//! [`PowerCut`]; the second slot starts with leftovers of an earlier image, not erased bytes. Slot 0 holds
//! the running image: the base image for a delta package; for a full package, `--base` or, if
//! none is given, a stand-in image (so the check "the old image still boots" has something to
//! compare). The session writes slot 1, activates it (state `Trial`), and the new image then
//! confirms itself.
//!
//! A clean run first counts the flash operations of one whole update, and measures the peak
//! heap and stack of the session. Then each cut run starts from the same fresh device, cuts the
//! power during operation `k` (tearing it: half of a program's bytes are written, half of an
//! erase's range is reset), checks what the device would boot (the old image, byte for byte,
//! or the new one), reboots and resumes (alternately re-downloading from the start and asking
//! for the bytes from the resume offset), until the update completes. A cut run *survives* when
//! every boot check passed and the device ends up running the new image, confirmed, with the
//! package's security counter stored.

use crate::error::{Error, Result};
use crate::sim::{PowerCut, SimFlash};
use otapack_core::apply::{Applier, FlashBase};
use otapack_core::keys::TrustedKey;
use otapack_core::patch::BaseImage;
use otapack_core::policy::DeviceInfo;
use otapack_core::session::{confirm, Session};
use otapack_core::state::{Mode, StateStore};
use otapack_core::verify::Policy;
use otapack_core::wire::manifest::Kind;
use otapack_core::Package;
use sha2::{Digest, Sha256};
use std::rc::Rc;

/// The simulated flash: 4-byte program unit, 4 KiB sectors.
pub type DeviceFlash = SimFlash<4, 4096>;
const WRITE_BUF: usize = 256;

/// Where to cut the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutPlan {
    /// No power cut: one clean run.
    None,
    /// During every flash operation of the update, one run each.
    Every,
    /// During `n` operations spread evenly over the update.
    Sample(u64),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub cuts: CutPlan,
    /// How much of the cut operation still happens, in thousandths.
    pub torn_permille: u32,
    /// Download chunk size (bytes pushed at a time).
    pub chunk: usize,
    pub policy: Policy,
    /// Cut the power a second time, during this operation of the resumed run (a cut while
    /// recovering from a cut).
    pub recut: Option<u64>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            cuts: CutPlan::None,
            torn_permille: 500,
            chunk: 1024,
            policy: Policy::default(),
            recut: None,
        }
    }
}

/// What a simulation measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// "two-slot".
    pub layout: &'static str,
    pub cuts_injected: u64,
    pub cuts_survived: u64,
    /// The first cut run that did not survive: the cut operation and why.
    pub first_failure: Option<(u64, String)>,
    /// SHA-256 of the image the device runs at the end of the clean run.
    pub final_sha256: [u8; 32],
    /// Peak heap of the session (its buffers included), if the counting allocator is installed.
    pub peak_heap_bytes: Option<u64>,
    pub peak_stack_bytes: u64,
    /// Flash traffic of one clean update (both slots and the state region).
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub erases_total: u64,
    pub erases_max_per_sector: u32,
    /// Erase and program operations of one clean update.
    pub flash_ops: u64,
    pub scratch_bytes: u64,
}

/// A simulated device: two slots (two-slot updates), or one slot with staging and scratch
/// areas (in-place updates: `slots[1]` is unused).
#[derive(Debug, Clone)]
pub struct Device {
    pub slots: [DeviceFlash; 2],
    pub state: DeviceFlash,
    pub stage: DeviceFlash,
    pub scratch: DeviceFlash,
    pub power: Rc<PowerCut>,
}

impl Device {
    /// A fresh device running `old` from slot 0, with slots of `slot_size` bytes.
    pub fn new(old: &[u8], slot_size: usize) -> Self {
        let power = PowerCut::new();
        let flash = |size: usize| {
            let mut f = DeviceFlash::with_power(size, &power);
            f.program_once = true;
            f
        };
        let mut slot0 = flash(slot_size.max(old.len()));
        slot0.data[..old.len()].copy_from_slice(old);
        // The other slot holds leftovers of an earlier image, not erased flash.
        let mut slot1 = flash(slot_size.max(old.len()));
        for (i, b) in slot1.data.iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(0x9E37_79B9).rotate_left(7) as u8;
        }
        Device {
            slots: [slot0, slot1],
            state: flash(2 * 4096),
            stage: flash(4096),
            scratch: flash(4096),
            power,
        }
    }

    /// A fresh single-slot device running `old`, with a staging area for `package_len` bytes
    /// and a scratch area of `scratch_len` bytes.
    pub fn in_place(old: &[u8], slot_size: usize, package_len: usize, scratch_len: usize) -> Self {
        let mut d = Device::new(old, slot_size);
        let leftovers = |f: &mut DeviceFlash| {
            f.program_once = true;
            for (i, b) in f.data.iter_mut().enumerate() {
                *b = (i as u32).wrapping_mul(0x85EB_CA6B).rotate_left(11) as u8;
            }
        };
        d.stage = DeviceFlash::with_power(package_len, &d.power);
        leftovers(&mut d.stage);
        d.scratch = DeviceFlash::with_power(scratch_len, &d.power);
        leftovers(&mut d.scratch);
        d.slots[1] = DeviceFlash::new(0);
        d
    }

    fn all_flashes(&mut self) -> [&mut DeviceFlash; 5] {
        let [a, b] = &mut self.slots;
        [a, b, &mut self.state, &mut self.stage, &mut self.scratch]
    }

    fn flashes(&self) -> [&DeviceFlash; 5] {
        [
            &self.slots[0],
            &self.slots[1],
            &self.state,
            &self.stage,
            &self.scratch,
        ]
    }

    /// What the bootloader would boot: the active slot from the state region.
    pub fn booted(&mut self, len: usize) -> Result<Vec<u8>> {
        let state = StateStore::open(&mut self.state)?;
        let slot = usize::from(state.record().active_slot & 1);
        Ok(self.slots[slot].data[..len].to_vec())
    }
}

/// Package facts the simulation needs.
struct Facts {
    image_size: usize,
    base_size: usize,
    manifest_len: usize,
    payload_buf: usize,
    delta: bool,
    in_place: bool,
    slice_size: usize,
    image_sha256: [u8; 32],
}

fn facts(package: &[u8]) -> Result<Facts> {
    let pkg = Package::parse(package)?;
    let m = pkg.manifest();
    Ok(Facts {
        image_size: m.image_size() as usize,
        base_size: m.base_size() as usize,
        manifest_len: 32 + m.as_bytes().len(),
        payload_buf: Applier::<&mut DeviceFlash>::payload_buffer_len(&m),
        delta: m.kind() != Kind::Full,
        in_place: m.kind() == Kind::DeltaInPlace,
        slice_size: m.slice_size() as usize,
        image_sha256: m.image_sha256(),
    })
}

/// One power-on of the device: boot; if an update is on trial, the new image confirms itself;
/// if the device already runs the package's image, nothing happens; otherwise download (or
/// resume) the package, activate it, and the new image confirms itself. `range`: on resume, ask for the
/// package from the resume offset instead of downloading it again from the start.
pub fn power_on(
    dev: &mut Device,
    package: &[u8],
    trusted: &[TrustedKey],
    opts: &SimOptions,
    range: bool,
) -> Result<()> {
    let f = facts(package)?;
    if f.in_place {
        return power_on_in_place(dev, package, trusted, opts, &f);
    }
    let Device { slots, state, .. } = dev;
    let mut state = StateStore::open(state)?;
    if state.record().mode == Mode::Trial {
        return Ok(confirm(&mut state)?);
    }
    let active = usize::from(state.record().active_slot & 1);
    if state.record().mode == Mode::Idle {
        // Already running the package's image: nothing to do.
        let running = slots[active].data.get(..f.image_size).unwrap_or(&[]);
        if <[u8; 32]>::from(Sha256::digest(running)) == f.image_sha256 {
            return Ok(());
        }
    }
    let (s0, s1) = slots.split_at_mut(1);
    let (running, target) = if active == 0 {
        (&mut s0[0], &mut s1[0])
    } else {
        (&mut s1[0], &mut s0[0])
    };
    let mut base = FlashBase::new(running, f.base_size as u64)?;
    let base = f.delta.then_some(&mut base as &mut dyn BaseImage);
    // The caller buffers a device would reserve, allocated here so they count as its heap.
    let mut manifest_buf = vec![0u8; f.manifest_len];
    let mut payload_buf = vec![0u8; f.payload_buf.max(WRITE_BUF)];
    let mut write_buf = vec![0u8; WRITE_BUF];
    let applier = Applier::new(
        trusted,
        opts.policy,
        target,
        base,
        &mut manifest_buf,
        &mut payload_buf,
        &mut write_buf,
    )?;
    let mut session = Session::new(applier, &mut state, DeviceInfo::default())?;
    let mut pos = 0usize;
    while pos < package.len() {
        if let Some(want) = session.wanted_offset() {
            if range {
                session.jump(want)?;
                pos = want as usize;
            }
        }
        let end = (pos + opts.chunk.max(1)).min(package.len());
        session.push(chunk_at(package, pos, end)?)?;
        pos = end;
    }
    session.finish()?;
    // The bootloader boots the new slot; the new image confirms itself.
    confirm(&mut state)?;
    Ok(())
}

/// [`power_on`] for a single-slot device and an in-place package: boot; confirm an update on
/// trial; otherwise stage the package (from where the download stopped), then verify and
/// apply it in place, resuming at the recorded step.
fn power_on_in_place(
    dev: &mut Device,
    package: &[u8],
    trusted: &[TrustedKey],
    opts: &SimOptions,
    f: &Facts,
) -> Result<()> {
    use otapack_core::inplace::{begin_download, install, Buffers, Stager};
    let Device {
        slots,
        state,
        stage,
        scratch,
        ..
    } = dev;
    let slot = &mut slots[0];
    let mut state = StateStore::open(state)?;
    match state.record().mode {
        Mode::Trial => return Ok(confirm(&mut state)?),
        Mode::Idle => {
            let running = slot.data.get(..f.image_size).unwrap_or(&[]);
            if <[u8; 32]>::from(Sha256::digest(running)) == f.image_sha256 {
                return Ok(());
            }
            begin_download(&mut state, package.len() as u64)?;
        }
        _ => {}
    }
    let mut manifest_buf = vec![0u8; f.manifest_len];
    let mut payload_buf = vec![0u8; f.payload_buf.max(WRITE_BUF)];
    let mut write_buf = vec![0u8; WRITE_BUF];
    if !otapack_core::inplace::verified(&state) {
        // The download, resumed at the first sector not staged (HTTP Range).
        let mut stager = Stager::new(stage, &mut state, &mut write_buf)?;
        let mut pos = stager.offset() as usize;
        while !stager.complete() {
            let end = (pos + opts.chunk.max(1)).min(package.len());
            stager.push(chunk_at(package, pos, end)?)?;
            pos = end;
        }
    }
    install(
        slot,
        stage,
        scratch,
        &mut state,
        trusted,
        opts.policy,
        DeviceInfo::default(),
        Buffers {
            manifest: &mut manifest_buf,
            payload: &mut payload_buf,
            write: &mut write_buf,
        },
    )?;
    confirm(&mut state)?;
    Ok(())
}

/// `package[pos..end]`, or an error if the device asked for bytes the package does not have.
fn chunk_at(package: &[u8], pos: usize, end: usize) -> Result<&[u8]> {
    package.get(pos..end).ok_or_else(|| {
        Error::Invalid(format!(
            "simulation: the device asked for bytes {pos}..{end} of a {}-byte package",
            package.len()
        ))
    })
}

/// Runs the simulation. `meter` measures the clean run's peak heap and stack
/// (`otapack_probe::measure`).
pub fn simulate(
    package: &[u8],
    base: Option<&[u8]>,
    trusted: &[TrustedKey],
    opts: &SimOptions,
    meter: &dyn Fn(&mut dyn FnMut()) -> otapack_probe::Measured,
) -> Result<SimReport> {
    let f = facts(package)?;
    let pkg = Package::parse(package)?;
    let new_sha = pkg.manifest().image_sha256();
    let counter = pkg.manifest().security_counter();
    let old: Vec<u8> = match base {
        Some(b) => b.to_vec(),
        None if f.delta => return Err(otapack_core::Error::BaseRequired.into()),
        // A stand-in running image for a full package.
        None => (0..f.image_size).map(|i| (i * 7 + 3) as u8).collect(),
    };
    let slot_size = f.image_size.max(old.len()).div_ceil(4096) * 4096;
    let fresh = if f.in_place {
        Device::in_place(&old, slot_size, package.len(), f.slice_size)
    } else {
        Device::new(&old, slot_size)
    };

    // The clean run: counts operations and traffic, measures RAM.
    let mut dev = fresh.clone();
    let mut result = Ok(());
    let measured = meter(&mut || result = power_on(&mut dev, package, trusted, opts, false));
    result?;
    let flash_ops = dev.power.ops.get();
    let image = dev.booted(f.image_size)?;
    let final_sha256: [u8; 32] = Sha256::digest(&image).into();
    if final_sha256 != new_sha {
        return Err(Error::Invalid(
            "simulation: the device does not run the new image after a clean update".into(),
        ));
    }
    let flashes = dev.flashes();
    let mut report = SimReport {
        layout: if f.in_place { "in-place" } else { "two-slot" },
        cuts_injected: 0,
        cuts_survived: 0,
        first_failure: None,
        final_sha256,
        peak_heap_bytes: measured.peak_heap,
        peak_stack_bytes: measured.peak_stack,
        bytes_read: flashes.iter().map(|f| f.bytes_read).sum(),
        bytes_written: flashes.iter().map(|f| f.bytes_written).sum(),
        erases_total: flashes.iter().map(|f| f.erases_total()).sum(),
        erases_max_per_sector: flashes
            .iter()
            .map(|f| f.erases_max_per_sector())
            .max()
            .unwrap_or(0),
        flash_ops,
        scratch_bytes: if f.in_place { f.slice_size as u64 } else { 0 },
    };

    let cut_points: Vec<u64> = match opts.cuts {
        CutPlan::None => vec![],
        CutPlan::Every => (1..=flash_ops).collect(),
        CutPlan::Sample(n) => {
            let n = n.min(flash_ops).max(1);
            (0..n).map(|i| 1 + i * flash_ops / n).collect()
        }
    };
    let want = Want {
        old: &old,
        new_sha,
        image_size: f.image_size,
        counter,
        stage_sectors: package.len().div_ceil(4096) as u32,
    };
    for (i, &k) in cut_points.iter().enumerate() {
        report.cuts_injected += 1;
        match cut_run(&fresh, package, trusted, opts, k, i % 2 == 0, &want) {
            Ok(()) => report.cuts_survived += 1,
            Err(why) => {
                if report.first_failure.is_none() {
                    report.first_failure = Some((k, why));
                }
            }
        }
    }
    Ok(report)
}

/// What the device must show.
struct Want<'a> {
    old: &'a [u8],
    new_sha: [u8; 32],
    image_size: usize,
    counter: u64,
    /// In-place: steps of the download phase (staging sectors).
    stage_sectors: u32,
}

/// One cut run from a fresh device: cut during operation `k`, check the boot, resume to the
/// end, check the end state.
fn cut_run(
    fresh: &Device,
    package: &[u8],
    trusted: &[TrustedKey],
    opts: &SimOptions,
    k: u64,
    range: bool,
    want: &Want<'_>,
) -> std::result::Result<(), String> {
    let mut dev = fresh.clone();
    // The clone shares the fresh device's power control: give it its own.
    let power = PowerCut::new();
    for f in dev.all_flashes() {
        f.power = Some(Rc::clone(&power));
    }
    dev.power = Rc::clone(&power);
    power.arm(k, opts.torn_permille);
    let mut boots = 0;
    loop {
        boots += 1;
        if boots > 8 {
            return Err("the update does not complete after 8 reboots".into());
        }
        let r = power_on(&mut dev, package, trusted, opts, range);
        if power.off.get() {
            power.restore();
            check_boot(&mut dev, want)?;
            if boots == 1 {
                if let Some(r) = opts.recut {
                    power.arm(r, opts.torn_permille);
                }
            }
            continue;
        }
        r.map_err(|e| format!("after the cut, the update failed: {e}"))?;
        break;
    }
    if power.cuts.get() == 0 {
        return Err("the cut did not happen".into());
    }
    let image = dev.booted(want.image_size).map_err(|e| e.to_string())?;
    if <[u8; 32]>::from(Sha256::digest(&image)) != want.new_sha {
        return Err("after the update the device does not run the new image".into());
    }
    let state = StateStore::open(&mut dev.state).map_err(|e| e.to_string())?;
    let rec = state.record();
    if rec.mode != Mode::Idle || rec.security_counter != want.counter {
        return Err(format!(
            "after the update the state is {:?} with counter {} (want Idle, {})",
            rec.mode, rec.security_counter, want.counter
        ));
    }
    Ok(())
}

/// After a cut: the device boots either the old image, intact, or the new one.
fn check_boot(dev: &mut Device, want: &Want<'_>) -> std::result::Result<(), String> {
    let state = StateStore::open(&mut dev.state).map_err(|e| format!("state unreadable: {e}"))?;
    let rec = *state.record();
    let slot = usize::from(rec.active_slot & 1);
    let data = &dev.slots[slot].data;
    let new_ok = data.len() >= want.image_size
        && <[u8; 32]>::from(Sha256::digest(&data[..want.image_size])) == want.new_sha;
    let old_ok = data.get(..want.old.len()) == Some(want.old);
    let steps = state.steps();
    match (slot, rec.mode) {
        (0, Mode::Idle | Mode::TwoSlot) if old_ok => Ok(()),
        (1, Mode::Trial | Mode::Idle) if new_ok => Ok(()),
        // In place: the running image is intact until the package is staged and verified...
        (0, Mode::InPlace) if steps <= want.stage_sectors && old_ok => Ok(()),
        // ...then the slot is mixed and the bootloader resumes the update instead of booting
        // it (the final checks prove the resume ends with the new image).
        (0, Mode::InPlace) if steps > want.stage_sectors => Ok(()),
        (0, Mode::Trial | Mode::Idle) if new_ok => Ok(()),
        _ => Err(format!(
            "after the cut the device would boot slot {slot} in state {:?}, holding {}",
            rec.mode,
            if new_ok {
                "the new image"
            } else if old_ok {
                "the old image"
            } else {
                "neither image"
            }
        )),
    }
}
