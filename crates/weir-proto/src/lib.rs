//! Weir's formats, with no I/O: the record format shared by producers, the commit log and
//! consumers ([`batch`]: a Kafka RecordBatch v2 in a Weir envelope), message ids ([`message_id`]), the native protocol's frames
//! ([`frame`]), its protobuf bodies ([`pb`]) and its stable error codes ([`error_code`]), the
//! transactions' decision records ([`transaction`]), the names broker and clients share
//! ([`names`]: internal topics, properties the broker sets, the naming rule for topics) and
//! the rule for consumer group names ([`group_name`]).

pub mod batch;
pub mod error_code;
pub mod frame;
pub mod group_name;
pub mod message_id;
pub mod names;
pub mod pb;
pub mod transaction;

pub use error_code::ErrorCode;
pub use frame::{ApiKey, Frame, FrameCodec, Header, OutFrame};
pub use group_name::{GroupNameError, validate_group_name};
pub use message_id::MessageId;
