module safestash

go 1.19
