//! A VFIO group (`/dev/vfio/N`): the unit of isolation on the legacy interface.

use std::ffi::CString;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE};

use crate::container::Container;
use crate::error::{Error, Result};
use crate::kernel::{Errno, GroupNode, KernelFd, KernelOp, VfioKernel};

/// `VFIO_GROUP_GET_STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    /// Every device of the group is bound to vfio-pci or to no driver.
    pub viable: bool,
    /// The group is in a container.
    pub container_set: bool,
}

/// An open VFIO group, attached to a container.
#[derive(Debug)]
pub struct Group {
    node: GroupNode,
    fd: Option<KernelFd>,
    container: Arc<Container>,
}

impl Group {
    /// Opens the group node and checks its status (without joining a container).
    pub(crate) fn open_node(kernel: &Arc<dyn VfioKernel>, node: GroupNode) -> Result<KernelFd> {
        kernel.open_group(node).map_err(|e| {
            let err = Error::kernel(KernelOp::OpenGroup, format!("group {}", node.id()), e);
            match e {
                Errno::ENOENT => err.with_hint(format!(
                    "/dev/{} does not exist: bind a device of the group to vfio-pci first",
                    node.dev_path()
                )),
                Errno::EBUSY => err.with_hint("another process has the group open"),
                Errno::EACCES | Errno::EPERM => err.with_hint(format!(
                    "no permission on /dev/{}: run as root, or give the node to the user (a bind for that user)",
                    node.dev_path()
                )),
                _ => err,
            }
        })
    }

    /// Reads the status of an open group fd.
    pub(crate) fn status_of(
        kernel: &Arc<dyn VfioKernel>,
        node: GroupNode,
        fd: &KernelFd,
    ) -> Result<GroupStatus> {
        let flags = kernel.group_get_status(fd).map_err(|e| {
            Error::kernel(KernelOp::GroupGetStatus, format!("group {}", node.id()), e)
        })?;
        Ok(GroupStatus {
            viable: flags & VFIO_GROUP_FLAGS_VIABLE != 0,
            container_set: flags & VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
        })
    }

    /// Puts an open, viable group fd into `container` and sets the container's IOMMU if
    /// this is its first group. On failure the fd is closed.
    pub(crate) fn attach(
        node: GroupNode,
        fd: KernelFd,
        container: &Arc<Container>,
    ) -> Result<Arc<Group>> {
        let kernel = container.kernel().clone();
        let target = format!("group {}", node.id());
        if let Err(e) = kernel.group_set_container(&fd, container.fd()) {
            kernel.close(fd);
            return Err(Error::kernel(KernelOp::GroupSetContainer, target, e));
        }
        let group = Group { node, fd: Some(fd), container: container.clone() };
        container.ensure_iommu(matches!(node, GroupNode::NoIommu(_)))?;
        Ok(Arc::new(group))
    }

    /// The group's node.
    pub fn node(&self) -> GroupNode {
        self.node
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.node.id()
    }

    /// The container the group is in.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }

    pub(crate) fn fd(&self) -> &KernelFd {
        self.fd.as_ref().expect("group fd is present until drop")
    }

    /// The group's status now.
    pub fn status(&self) -> Result<GroupStatus> {
        Group::status_of(self.container.kernel(), self.node, self.fd())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for a device name (`0000:01:00.0`).
    pub(crate) fn device_fd(&self, name: &str) -> Result<KernelFd> {
        let target = format!("device {name}");
        let cname = CString::new(name).map_err(|_| Error::Invalid {
            what: "device name",
            input: name.to_string(),
            reason: "contains a NUL byte".into(),
        })?;
        self.container.kernel().group_get_device_fd(self.fd(), &cname).map_err(|e| {
            let err = Error::kernel(KernelOp::GroupGetDeviceFd, target, e);
            match e {
                Errno::ENODEV => {
                    err.with_hint(format!("the device is not in IOMMU group {}", self.id()))
                }
                Errno::EBUSY => {
                    err.with_hint("the device is already open (by this or another process)")
                }
                _ => err,
            }
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // Closing the fd takes the group out of its container; the kernel unsets it.
            self.container.kernel().close(fd);
        }
    }
}

impl std::os::fd::AsRawFd for Group {
    /// The raw descriptor, for interoperating with other VFIO code (a KVM device, a C
    /// library). It stays owned by this object: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().raw()
    }
}

impl std::os::fd::AsFd for Group {
    /// The descriptor, lent: it stays owned by this object (duplicate it with
    /// `try_clone_to_owned` to keep one).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as this object lives (the kernel
        // seam's contract), and the borrow cannot outlive `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd().raw()) }
    }
}
