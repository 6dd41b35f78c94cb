package feed

// NodeRecordSize is the size of a node's record in the tree file, for tests
// that damage records or put them where a crash could.
const NodeRecordSize = nodeSize
