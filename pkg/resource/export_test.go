package resource

// DecodeDocumentPlain exposes the plain decoding path to the external
// tests that compare the fast one with it.
var DecodeDocumentPlain = decodeDocumentPlain
