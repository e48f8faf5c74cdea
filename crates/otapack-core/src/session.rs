//! The device update session for two-slot updates (full and delta packages): feed downloaded
//! chunks, read progress 0-100, and on failure get a typed error that maps to the step codes
//! OTA services expect ([`Error::report_code`]). The session keeps the update state
//! ([`crate::state`]) so that a reset at any moment resumes at the first unfinished slice, and
//! the new slot is activated only after the whole image was read back and matched the manifest.
//!
//! Slots: slot `active_slot` runs (and is the base image of a delta package); the other slot,
//! [`target_slot`], receives the new image.
//!
//! | step | what happens                                   | state record after it | a reset here leaves |
//! |------|-------------------------------------------------|-----------------------|---------------------|
//! | 1    | header, manifest, signatures checked; device policy (hardware, software type, security counter ≥ stored, expiry); delta: base image checked | unchanged | the old image booting, nothing written |
//! | 2    | new update: record `TwoSlot`, target, package id, pending counter (same package already in progress: resume at its step count instead) | `TwoSlot`, steps 0 | the old image booting; the next session with the same package resumes |
//! | 3    | each slice: payload digest, decode, program, read back, digest; then one step marker | `TwoSlot`, steps = slices done | the old image booting; the next session skips the slices done (or asks for the bytes from [`Session::wanted_offset`]) |
//! | 4    | after the last slice and the trailer: the whole target slot image is read back and hashed against the manifest | unchanged | as step 3 |
//! | 5    | activation: record `Trial` with `active_slot` = target | `Trial` | the new image booting, on trial |
//! | 6    | the new image runs and calls [`confirm`]: the stored security counter becomes the package's | `Idle` | the new image booting, confirmed |
//!
//! A bootloader that finds `Trial` after a failed boot of the new image calls [`revert`]
//! (`active_slot` back to the old slot, which two-slot updates never touch). A new update is
//! refused while an update is on trial.

use crate::apply::{Applier, Event, Progress};
use crate::error::{Error, Result};
use crate::policy::{check_device, DeviceInfo};
use crate::state::{Mode, StateRecord, StateStore};
use crate::verify::SignatureSummary;
use embedded_storage::nor_flash::NorFlash;

/// The slot a two-slot update writes, given the state.
pub fn target_slot(rec: &StateRecord) -> u8 {
    1 - (rec.active_slot & 1)
}

/// A two-slot update in progress. See the module documentation.
pub struct Session<'a, 's, F: NorFlash, S: NorFlash> {
    applier: Applier<'a, F>,
    state: &'s mut StateStore<S>,
    device: DeviceInfo<'a>,
    error: Option<Error>,
}

impl<'a, 's, F: NorFlash, S: NorFlash> Session<'a, 's, F, S> {
    /// A session over `applier`, whose flash must be slot [`target_slot`] and whose base (for
    /// delta packages) slot `active_slot`. The device's stored counter is taken from the state.
    pub fn new(
        applier: Applier<'a, F>,
        state: &'s mut StateStore<S>,
        device: DeviceInfo<'a>,
    ) -> Result<Self> {
        match state.record().mode {
            Mode::Idle | Mode::TwoSlot => {}
            Mode::Trial => {
                return Err(Error::WrongState {
                    what: "an update is on trial: confirm or revert it first",
                })
            }
            Mode::InPlace => {
                return Err(Error::WrongState {
                    what: "an in-place update is in progress",
                })
            }
        }
        Ok(Session {
            applier,
            state,
            device,
            error: None,
        })
    }

    /// Feeds the next downloaded bytes. On error the update stops; its
    /// [`report_code`](Error::report_code) is what to report to the service.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        while !chunk.is_empty() {
            let (used, event) = match self.applier.push_step(chunk) {
                Ok(x) => x,
                Err(e) => return Err(self.fail(e)),
            };
            chunk = chunk.get(used..).unwrap_or(&[]);
            if let Some(event) = event {
                if let Err(e) = self.on_event(event) {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.error = Some(e);
        e
    }

    fn on_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Authenticated => self.begin(),
            Event::SliceDone(n) => {
                let steps = self.state.step()?;
                if steps != n + 1 {
                    return Err(Error::WrongState {
                        what: "slice count and recorded steps disagree",
                    });
                }
                Ok(())
            }
        }
    }

    /// Step 1 (device policy) and step 2 (record or resume), before any flash write.
    fn begin(&mut self) -> Result<()> {
        let rec = *self.state.record();
        let (counter, id) = {
            let m = self
                .applier
                .manifest()
                .ok_or(Error::Truncated { what: "manifest" })?;
            let mut device = self.device;
            device.security_counter = device.security_counter.max(rec.security_counter);
            check_device(&m, &device)?;
            let id = self
                .applier
                .package_id()
                .ok_or(Error::Truncated { what: "manifest" })?;
            (m.security_counter(), id)
        };
        let target = target_slot(&rec);
        if rec.mode == Mode::TwoSlot && rec.package_id == id && rec.target_slot == target {
            return self.applier.resume_from(self.state.steps());
        }
        self.state.commit(StateRecord {
            mode: Mode::TwoSlot,
            target_slot: target,
            steps_base: 0,
            pending_counter: counter,
            package_id: id,
            aux: 0,
            ..rec
        })
    }

    /// Progress 0-100 by slices written and verified (including those of earlier sessions).
    pub fn progress(&self) -> Progress {
        self.applier.progress()
    }

    /// The package offset to download from next when it is ahead of what was pushed (after a
    /// resume): request the package from there (HTTP Range) and call [`Session::jump`]. Pushing
    /// the skipped bytes instead works too.
    pub fn wanted_offset(&self) -> Option<u64> {
        self.applier.wanted_offset()
    }

    /// The next pushed bytes start at `offset` ([`Session::wanted_offset`]).
    pub fn jump(&mut self, offset: u64) -> Result<()> {
        self.applier.jump(offset).map_err(|e| self.fail(e))
    }

    /// Ends the download: checks the whole image in the target slot and activates it (state
    /// `Trial`). Only then does the bootloader boot the new slot.
    pub fn finish(self) -> Result<SignatureSummary> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let summary = self.applier.finish()?;
        let rec = *self.state.record();
        if rec.mode != Mode::TwoSlot {
            return Err(Error::WrongState {
                what: "the update was not recorded",
            });
        }
        self.state.commit(StateRecord {
            mode: Mode::Trial,
            active_slot: rec.target_slot,
            target_slot: rec.active_slot,
            steps_base: 0,
            ..rec
        })?;
        Ok(summary)
    }
}

/// The new image runs well: end the trial and store its security counter (anti-rollback: the
/// counter moves only once the update is confirmed good).
pub fn confirm<S: NorFlash>(state: &mut StateStore<S>) -> Result<()> {
    let rec = *state.record();
    if rec.mode != Mode::Trial {
        return Err(Error::WrongState {
            what: "no update on trial to confirm",
        });
    }
    state.commit(StateRecord {
        mode: Mode::Idle,
        security_counter: rec.security_counter.max(rec.pending_counter),
        pending_counter: 0,
        package_id: [0; 32],
        steps_base: 0,
        aux: 0,
        ..rec
    })
}

/// The new image did not confirm: boot the old slot again (two-slot updates never touch it).
/// Also abandons an unfinished two-slot update.
pub fn revert<S: NorFlash>(state: &mut StateStore<S>) -> Result<()> {
    let rec = *state.record();
    let active_slot = match rec.mode {
        Mode::Trial => rec.target_slot,
        Mode::TwoSlot => rec.active_slot,
        Mode::Idle | Mode::InPlace => {
            return Err(Error::WrongState {
                what: "nothing to revert",
            })
        }
    };
    state.commit(StateRecord {
        mode: Mode::Idle,
        active_slot,
        target_slot: 0,
        pending_counter: 0,
        package_id: [0; 32],
        steps_base: 0,
        aux: 0,
        ..rec
    })
}
