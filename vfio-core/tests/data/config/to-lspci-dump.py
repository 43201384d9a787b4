import sys
# Writes a config image in the `lspci -xxxx` text format that `lspci -F` reads.
data = open(sys.argv[1],"rb").read()
addr = sys.argv[2] if len(sys.argv) > 2 else "01:00.0"
print(addr + " dump")
w = 3 if len(data) > 256 else 2
for off in range(0, len(data), 16):
    print(("%0*x: " % (w, off)) + " ".join("%02x" % b for b in data[off:off+16]))
