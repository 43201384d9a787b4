//! `vfio-lab`: boots a QEMU VM with virtio-iommu and test devices and runs the toolkit in it.

fn main() {
    eprintln!("vfio-lab: not built yet");
    std::process::exit(2);
}
