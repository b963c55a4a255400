module cbd.local/bench/go_mirror

go 1.19

require cbd.local/client v0.0.0

replace cbd.local/client => ../../../clients/go
