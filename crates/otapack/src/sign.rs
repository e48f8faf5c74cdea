//! Adding signatures to an existing package, e.g. later and on another machine than the build.

use crate::build::signature_block;
use crate::error::Result;
use crate::keys::SigningKey;
use otapack_core::decode::SliceDecoder;
use otapack_core::package::assemble;
use otapack_core::verify::{verify_package, Policy};
use otapack_core::Package;

/// Returns `package` with one more signature per key. The package's contents are verified
/// first (trailer, every slice and the image digest): nothing corrupt gets signed.
pub fn add_signatures(package: &[u8], keys: &[&SigningKey]) -> Result<Vec<u8>> {
    let pkg = Package::parse(package)?;
    let policy = Policy {
        required_signatures: 0,
        allow_unsigned: true,
    };
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    verify_package(
        &pkg,
        &[],
        &policy,
        &mut SliceDecoder::new(),
        &mut buf,
        |_, _| Ok(()),
    )?;
    let existing: Vec<_> = pkg.signatures().entries().collect();
    let block = signature_block(&existing, keys, &pkg.signed_message())?;
    Ok(assemble(
        pkg.manifest().as_bytes(),
        &block,
        pkg.payload_area(),
    )?)
}
