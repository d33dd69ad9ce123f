mod aws_adapter;
mod support;
