//! Broker operations that do not depend on a protocol: the native handlers and the HTTP admin
//! API both call these, then encode the answer their own way (protobuf or JSON).

pub(crate) mod browse;
pub(crate) mod dead_letter;
pub(crate) mod group;
pub(crate) mod lookup;
pub(crate) mod overview;
pub(crate) mod produce;
pub(crate) mod topic;
