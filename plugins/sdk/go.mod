module github.com/storegate/storegate/plugins/sdk

go 1.26
