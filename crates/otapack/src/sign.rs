//! Adding signatures to an existing package, e.g. later and on another machine than the build.

use crate::build::signature_block;
use crate::error::Result;
use crate::keys::SigningKey;
use otapack_core::decode::SliceDecoder;
use otapack_core::package::assemble;
use otapack_core::verify::{verify_package, Policy};
use otapack_core::Package;

/// Returns `package` with one more signature per key. The package's contents are verified
/// first (trailer, every slice and the image digest): nothing corrupt gets signed. A delta
/// package needs `base`, the image it applies to, for that.
pub fn add_signatures(
    package: &[u8],
    keys: &[&SigningKey],
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let pkg = Package::parse(package)?;
    let policy = Policy {
        required_signatures: 0,
        allow_unsigned: true,
    };
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    let mut base = base;
    verify_package(
        &pkg,
        &[],
        &policy,
        &mut SliceDecoder::new(),
        crate::apply::base_image(&mut base),
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
