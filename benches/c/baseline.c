/* The raw-C baseline for the benchmarks: the same kernel calls vfio-core makes, with
 * nothing around them. Kernel ABI from <linux/vfio.h>; the few iommufd definitions are
 * written out here because older libc headers lack <linux/iommufd.h>. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

#define VB_IOMMUFD_TYPE ';'
struct vb_ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct vb_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
#define VB_IOMMU_IOAS_MAP _IO(VB_IOMMUFD_TYPE, 0x85)
#define VB_IOMMU_IOAS_UNMAP _IO(VB_IOMMUFD_TYPE, 0x86)
#define VB_IOAS_MAP_FIXED_IOVA 1
#define VB_IOAS_MAP_WRITEABLE 2
#define VB_IOAS_MAP_READABLE 4

static int64_t ret(long r) { return r < 0 ? -(int64_t)errno : (int64_t)r; }

int64_t vb_api_version(int container) { return ret(ioctl(container, VFIO_GET_API_VERSION)); }

int64_t vb_dma_map(int container, uint64_t vaddr, uint64_t iova, uint64_t size) {
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m), .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = vaddr, .iova = iova, .size = size,
    };
    return ret(ioctl(container, VFIO_IOMMU_MAP_DMA, &m));
}

int64_t vb_dma_unmap(int container, uint64_t iova, uint64_t size) {
    struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
    long r = ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u);
    return r < 0 ? -(int64_t)errno : (int64_t)u.size;
}

int64_t vb_ioas_map(int iommufd, uint32_t ioas, uint64_t vaddr, uint64_t iova, uint64_t size) {
    struct vb_ioas_map m = {
        .size = sizeof(m), .ioas_id = ioas, .user_va = vaddr, .length = size, .iova = iova,
        .flags = VB_IOAS_MAP_FIXED_IOVA | VB_IOAS_MAP_READABLE | VB_IOAS_MAP_WRITEABLE,
    };
    return ret(ioctl(iommufd, VB_IOMMU_IOAS_MAP, &m));
}

int64_t vb_ioas_unmap(int iommufd, uint32_t ioas, uint64_t iova, uint64_t size) {
    struct vb_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = size };
    long r = ioctl(iommufd, VB_IOMMU_IOAS_UNMAP, &u);
    return r < 0 ? -(int64_t)errno : (int64_t)u.length;
}

int64_t vb_irq_trigger(int device, uint32_t index, uint32_t start, uint32_t count) {
    struct vfio_irq_set s = {
        .argsz = sizeof(s), .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        .index = index, .start = start, .count = count,
    };
    return ret(ioctl(device, VFIO_DEVICE_SET_IRQS, &s));
}

int64_t vb_irq_eventfds(int device, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds) {
    char buf[sizeof(struct vfio_irq_set) + 4 * 2048];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    if (count > 2048) return -EINVAL;
    s->argsz = sizeof(*s) + 4 * count;
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    s->index = index; s->start = start; s->count = count;
    memcpy(s->data, fds, 4 * count);
    return ret(ioctl(device, VFIO_DEVICE_SET_IRQS, s));
}

int64_t vb_irq_disable(int device, uint32_t index) {
    struct vfio_irq_set s = {
        .argsz = sizeof(s), .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        .index = index, .start = 0, .count = 0,
    };
    return ret(ioctl(device, VFIO_DEVICE_SET_IRQS, &s));
}

int64_t vb_pread32(int device, uint64_t offset, uint32_t *out) {
    return ret(pread(device, out, 4, (off_t)offset));
}

uint32_t vb_mmio_read32(const volatile uint32_t *p) { return *p; }
