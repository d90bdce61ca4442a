//! The distribution registry (Debian's `docker-registry`) the VM tier's
//! images come from, the images it serves, and the CRI client the guest's
//! doubles pull with.
