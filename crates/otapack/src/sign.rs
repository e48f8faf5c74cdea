//! Adding signatures to an existing package, e.g. later and on another machine than the build.

use crate::build::signature_block;
use crate::error::Result;
use crate::keys::SigningKey;
use crate::report::verify_contents;
use otapack_core::package::assemble;
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
    verify_contents(&pkg, base)?;
    let existing: Vec<_> = pkg.signatures().entries().collect();
    let block = signature_block(&existing, keys, &pkg.signed_message())?;
    Ok(assemble(
        pkg.manifest().as_bytes(),
        &block,
        pkg.payload_area(),
    )?)
}
