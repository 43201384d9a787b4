import subprocess, sys, os
# Capture config-space images of QEMU-emulated devices through the qtest protocol.
devs = [
 ("rp1", "-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=2"),
 ("nvme", "-device nvme-subsys,id=ss0 -device nvme,serial=abc,subsys=ss0,bus=rp1,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8"),
 ("rp2", "-device pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=3"),
 ("e1000e", "-device e1000e,bus=rp2,netdev=n0 -netdev user,id=n0"),
 ("rp3", "-device pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3,addr=4"),
 ("vnet", "-device virtio-net-pci,bus=rp3,netdev=n1,ats=on,disable-legacy=on -netdev user,id=n1"),
 ("edu", "-device edu,addr=5"),
 ("vga", "-device VGA,addr=6"),
 ("hda", "-device ich9-intel-hda,addr=7"),
 ("pcibr", "-device pcie-pci-bridge,id=pb,bus=pcie.0,addr=8"),
]
args = ["qemu-system-x86_64", "-M", "q35", "-qtest", "stdio", "-display", "none", "-nodefaults"]
for _, a in devs: args += a.split()
p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
def cmd(c):
    p.stdin.write(c + "\n"); p.stdin.flush()
    while True:
        l = p.stdout.readline()
        if not l: raise SystemExit("qemu died")
        if l.startswith("OK") or l.startswith("FAIL") or l.startswith("ERR"):
            return l.strip()
def cfgw(b,d,f,off,v):
    cmd("outl 0xcf8 0x%x" % (0x80000000 | b<<16 | d<<11 | f<<8 | off)); cmd("outl 0xcfc 0x%x" % v)
cfgw(0,0,0,0x60,0xb0000001); cfgw(0,0,0,0x64,0)
# bus numbers for root ports at 00:02,00:03,00:04 ; pcie-pci-bridge 00:08
for i,(d) in enumerate([2,3,4,8]):
    bus = i+1
    cfgw(0,d,0,0x18, (bus<<16)|(bus<<8))
def rd(b,d,f,off):
    r = cmd("readl 0x%x" % (0xb0000000 + (b<<20 | d<<15 | f<<12 | off)))
    return int(r.split()[1],16)
out = sys.argv[1]
targets = {"host-bridge":(0,0,0),"lpc":(0,0x1f,0),"root-port":(0,2,0),"nvme-sriov":(1,0,0),"e1000e":(2,0,0),"virtio-net-ats":(3,0,0),"edu":(0,5,0),"vga":(0,6,0),"ich9-hda":(0,7,0),"pcie-pci-bridge":(0,8,0)}
for name,(b,d,f) in targets.items():
    data = bytearray()
    for off in range(0,4096,4):
        data += rd(b,d,f,off).to_bytes(4,"little")
    if data[0:2] == b"\xff\xff": print("missing", name); continue
    open(os.path.join(out, name + ".bin"),"wb").write(data)
    print(name, data[0:4].hex())
p.stdin.close(); p.kill()
