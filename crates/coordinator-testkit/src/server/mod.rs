//! `FakeServicesServer`: an in-process `logdog.Services` server over loopback.
