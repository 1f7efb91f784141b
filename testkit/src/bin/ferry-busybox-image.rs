//! `ferry-busybox-image OUT.tar [NAME]`: write an OCI image archive holding Debian's
//! busybox-static (one layer, an applet symlink each) — the offline image of the demo and tests.
//! Load it with `ferry image import OUT.tar` (which names it as containerd does:
//! `busybox:1.36` → `docker.io/library/busybox:1.36`).

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next() else { bail!("usage: ferry-busybox-image OUT.tar [NAME (default busybox:1.36)]") };
    let name = args.next().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "busybox:1.36".to_owned());
    ferry_testkit::busybox_image_archive(std::path::Path::new(&out), &name)
        .with_context(|| format!("writing {}", out.to_string_lossy()))?;
    Ok(())
}
