package tracer

// Printable escapes what in s could act on the terminal rather than be
// shown, for text that echoes what a user or a process gave (a flag's
// argument, a path, a command name).
func Printable(s string) string { return printable(s) }
