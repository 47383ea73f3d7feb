package sdk

// Log writes msg to the gateway's log at level, tagged with the plugin's
// name (the host cuts messages over 4 KiB). Under GOOS=wasip1 it calls the
// host import storegate.log without copying or allocating; elsewhere (go
// test on the host) it writes to standard error.
func Log(level Level, msg string) { writeLog(level, msg) }
