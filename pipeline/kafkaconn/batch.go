package kafkaconn

// MaxBatchBytes bounds the bytes of messages a kafka-go Writer puts in one
// produce request to one partition (its BatchBytes). A broker refuses a
// record batch larger than its message.max.bytes — 1,048,588 bytes by
// default in Apache Kafka and in kfake — with MESSAGE_TOO_LARGE, and
// kafka-go then fails every message of the batch: a writer allowed larger
// batches works while little is written at once and fails for good once a
// write grows past it (a state checkpoint of more than about 1,300
// devices, a model artifact of more than one chunk). BatchBytes counts the
// messages' keys and values, not the record batch's own headers, hence the
// margin under the broker's limit.
const MaxBatchBytes = 1_000_000
