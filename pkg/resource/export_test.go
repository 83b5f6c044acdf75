package resource

// DecodeDocumentPlain exposes the plain decoding path to the external
// tests that compare the fast one with it.
var DecodeDocumentPlain = decodeDocumentPlain

// The YAML parsers, for the tests that compare Portico's own with
// yaml.v2.
var (
	ParseFastYAML   = parseFastYAML
	ParseYAMLv2Tree = parseYAMLv2Tree
)
