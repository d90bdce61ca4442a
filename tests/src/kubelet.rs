//! The kubelet double a VM guest carries: a systemd unit as the kubernetes
//! package ships it, and a kubelet that refuses what the kubelet refuses.
