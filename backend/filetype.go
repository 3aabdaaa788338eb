package backend

import "fmt"

// Valid reports whether t is one of the known object types; List rejects
// any other with a permanent error, as Handle.Valid does for handles.
func (t FileType) Valid() error {
	if t < ConfigFile || t > lastFileType {
		return fmt.Errorf("invalid file type %v", t)
	}
	return nil
}
