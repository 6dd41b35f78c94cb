package wire

import "fmt"

// Limits of an Extension.
const (
	// MaxExtensionName bounds an extension's name, in bytes.
	MaxExtensionName = 64
	// MaxExtensionPayload bounds an extension's payload, in bytes.
	MaxExtensionPayload = 64 << 10
)

// Extension carries a value of an application-defined extension, named by
// Name, on a feed's channel. The protocol gives the payload no meaning.
type Extension struct {
	Channel uint32
	Name    string
	Payload []byte
}

// Type implements Message.
func (*Extension) Type() Type { return TypeExtension }

// Validate implements Message.
func (m *Extension) Validate() error {
	if len(m.Name) == 0 || len(m.Name) > MaxExtensionName {
		return fmt.Errorf("%w: extension name of %d bytes, want 1 to %d", errField, len(m.Name), MaxExtensionName)
	}
	if len(m.Payload) > MaxExtensionPayload {
		return fmt.Errorf("%w: extension payload of %d bytes, at most %d", errField, len(m.Payload), MaxExtensionPayload)
	}
	return nil
}
