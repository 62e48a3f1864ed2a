# ndis_layout.py: an independent judge of the NDIS IPsec offload layouts.
# Declares NDIS_IPSEC_OFFLOAD_V1/V2 with ctypes exactly as ntddndis.h does
# (ULONG bit-fields allocated from the least significant bit, as MSVC and
# GCC both do for runs of same-type fields) and prints, for each member set
# alone to a value, the hex of the structure. Input (stdin): lines
# "v1|v2 Member.Path value"; output: one hex line per input line.
import ctypes as C
import sys

ULONG, BOOLEAN = C.c_uint32, C.c_uint8

class Supported(C.LittleEndianStructure):
    _fields_ = [("Encapsulation", ULONG), ("AhEspCombined", ULONG),
                ("TransportTunnelCombined", ULONG), ("IPv4Options", ULONG), ("Flags", ULONG)]

class IPv4AH(C.LittleEndianStructure):
    _fields_ = [("Md5", ULONG, 2), ("Sha_1", ULONG, 2), ("Transport", ULONG, 2),
                ("Tunnel", ULONG, 2), ("Send", ULONG, 2), ("Receive", ULONG, 2)]

class IPv4ESP(C.LittleEndianStructure):
    _fields_ = [("Des", ULONG, 2), ("Reserved", ULONG, 2), ("TripleDes", ULONG, 2),
                ("NullEsp", ULONG, 2), ("Transport", ULONG, 2), ("Tunnel", ULONG, 2),
                ("Send", ULONG, 2), ("Receive", ULONG, 2)]

class V1(C.LittleEndianStructure):
    _fields_ = [("Supported", Supported), ("IPv4AH", IPv4AH), ("IPv4ESP", IPv4ESP)]

class V2(C.LittleEndianStructure):
    _fields_ = [("Encapsulation", ULONG), ("IPv6Supported", BOOLEAN), ("IPv4Options", BOOLEAN),
                ("IPv6NonIPsecExtensionHeaders", BOOLEAN), ("Ah", BOOLEAN), ("Esp", BOOLEAN),
                ("AhEspCombined", BOOLEAN), ("Transport", BOOLEAN), ("Tunnel", BOOLEAN),
                ("TransportTunnelCombined", BOOLEAN), ("LsoSupported", BOOLEAN),
                ("ExtendedSequenceNumbers", BOOLEAN), ("UdpEsp", ULONG),
                ("AuthenticationAlgorithms", ULONG), ("EncryptionAlgorithms", ULONG),
                ("SaOffloadCapacity", ULONG)]

assert C.sizeof(V1) == 28, C.sizeof(V1)
assert C.sizeof(V2) == 32, C.sizeof(V2)

for line in sys.stdin:
    kind, path, value = line.split()
    s = V1() if kind == "v1" else V2()
    obj = s
    parts = path.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    setattr(obj, parts[-1], int(value, 0))
    print(bytes(s).hex())
