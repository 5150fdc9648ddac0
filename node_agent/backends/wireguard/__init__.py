"""The WireGuard backend: one device, peers changed by difference, through one of two drivers
(``uapi`` for wireguard-go and other userspace implementations, ``netlink`` for the kernel)."""
