//! The instances sharing one store: this one's place among them ([`membership`]) and
//! asking the others about their tickets ([`peers`]).

pub mod membership;
pub mod peers;
