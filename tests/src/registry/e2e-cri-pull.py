#!/usr/bin/python3
"""Pulls images through a container runtime's CRI, as kubeadm v1.31 does.

usage: e2e-cri-pull [--socket URL] [--timeout SECONDS] IMAGE...
       e2e-cri-pull [--socket URL] --status
       e2e-cri-pull [--socket URL] --present IMAGE

For each IMAGE, /runtime.v1.ImageService/PullImage with
PullImageRequest{image: ImageSpec{image: IMAGE}}, up to five attempts as
kubeadm's PullImageRetry, each bounded by --timeout; prints
"pulled IMAGE IMAGE_REF", or the runtime's error and exits 1.

--status asks /runtime.v1.RuntimeService/Status{verbose: false} within
kubeadm's 2 s and exits 0 unless it fails or reports RuntimeReady false
(kubeadm's CRI preflight ignores NetworkReady on purpose).

--present asks /runtime.v1.ImageService/ImageStatus for IMAGE within 2 s,
as kubeadm's ImageExists does before an IfNotPresent pull, and exits 0
when the runtime has it, 1 when it has not (or the call failed: kubeadm
then pulls).

Needs Debian's python3-grpcio only: the few CRI messages are encoded here
by hand, with the field numbers of cri-api's api.proto.
"""

import argparse
import sys

import grpc

PULL = "/runtime.v1.ImageService/PullImage"
STATUS = "/runtime.v1.RuntimeService/Status"
IMAGE_STATUS = "/runtime.v1.ImageService/ImageStatus"
# cmd/kubeadm/app/constants PullImageRetry, and util/runtime defaultTimeout.
ATTEMPTS = 5
STATUS_TIMEOUT = 2.0


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number, value):
    return varint(number << 3 | 2) + varint(len(value)) + value


def read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def fields(data):
    """(number, value) per field: an int for a varint, bytes otherwise."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            size, i = read_varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i : i + size], i + size
        else:
            raise ValueError("protobuf wire type %d" % wire)
        yield number, value


def pull_request(image):
    # PullImageRequest.image = 1 (ImageSpec); ImageSpec.image = 1 (string).
    return length_delimited(1, length_delimited(1, image.encode()))


def image_ref(response):
    # PullImageResponse.image_ref = 1.
    return next((v.decode() for n, v in fields(response) if n == 1), "")


def conditions(response):
    """(type, status, reason, message) per RuntimeCondition of a
    StatusResponse: status = 1 (RuntimeStatus), its conditions = 1."""
    out = []
    for number, status in fields(response):
        if number != 1:
            continue
        for n, condition in fields(status):
            if n != 1:
                continue
            parts = dict(fields(condition))
            text = lambda k: parts.get(k, b"").decode()
            out.append((text(1), bool(parts.get(2, 0)), text(3), text(4)))
    return out


def image_id(response):
    """ImageStatusResponse.image = 1 (Image), its id = 1; "" when absent."""
    for number, image in fields(response):
        if number == 1:
            return next((v.decode() for n, v in fields(image) if n == 1), "")
    return ""


def error(rpc):
    return "%s: %s" % (rpc.code().name, rpc.details())


def pull(channel, images, timeout):
    call = channel.unary_unary(PULL)
    for image in images:
        last = None
        for _ in range(ATTEMPTS):
            try:
                ref = image_ref(call(pull_request(image), timeout=timeout))
                print("pulled %s %s" % (image, ref), flush=True)
                break
            except grpc.RpcError as rpc:
                last = rpc
        else:
            print("e2e-cri-pull: pulling %s: %s" % (image, error(last)), file=sys.stderr)
            return 1
    return 0


def status(channel):
    try:
        response = channel.unary_unary(STATUS)(b"", timeout=STATUS_TIMEOUT)
    except grpc.RpcError as rpc:
        print("e2e-cri-pull: container runtime is not running: %s" % error(rpc), file=sys.stderr)
        return 1
    code = 0
    for kind, ok, reason, message in conditions(response):
        print("%s=%s %s %s" % (kind, str(ok).lower(), reason, message), flush=True)
        if kind == "RuntimeReady" and not ok:
            code = 1
    return code


def present(channel, image):
    try:
        response = channel.unary_unary(IMAGE_STATUS)(pull_request(image), timeout=STATUS_TIMEOUT)
    except grpc.RpcError as rpc:
        print("e2e-cri-pull: ImageStatus %s: %s" % (image, error(rpc)), file=sys.stderr)
        return 1
    found = image_id(response)
    if found:
        print("present %s %s" % (image, found), flush=True)
        return 0
    return 1


def main():
    parser = argparse.ArgumentParser(prog="e2e-cri-pull")
    parser.add_argument("--socket", default="unix:///run/containerd/containerd.sock")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pull attempt")
    parser.add_argument("--status", action="store_true")
    parser.add_argument("--present", metavar="IMAGE")
    parser.add_argument("images", nargs="*", metavar="IMAGE")
    args = parser.parse_args()
    if not args.status and not args.present and not args.images:
        parser.error("name an IMAGE, --status or --present IMAGE")
    # The node's HTTPS_PROXY is for the runtime, not for this socket.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(args.socket, options=options) as channel:
        if args.status:
            return status(channel)
        if args.present:
            return present(channel, args.present)
        return pull(channel, args.images, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
